"""All Block Kit lives here: one build_*_message function per kind of message.

Commands hand over message data; this module decides how it looks in Slack. Anything without
a dedicated builder is shown as mrkdwn sections of its plain text.
"""

from __future__ import annotations

from commands.backup.command import BackupStatus
from commands.health.command import HealthReports
from commands.restore.plan import RestorePlanMessage
from state.statuses import JobStatus

SECTION_LIMIT = 2900  # Slack allows 3000 characters in a section's text
MAX_BLOCKS = 50


def build_text_message(text: str) -> list[dict]:
    blocks = []
    chunk = ""
    for line in text.splitlines() or [""]:
        if len(chunk) + len(line) + 1 > SECTION_LIMIT:
            blocks.append(_section(chunk))
            chunk = ""
        while len(line) > SECTION_LIMIT:
            blocks.append(_section(line[:SECTION_LIMIT]))
            line = line[SECTION_LIMIT:]
        chunk = f"{chunk}\n{line}" if chunk else line
    if chunk or not blocks:
        blocks.append(_section(chunk or " "))
    return blocks[:MAX_BLOCKS]


def build_backup_message(status: BackupStatus) -> list[dict]:
    lines = status.text().splitlines()
    blocks = [_section(f"*{lines[0]}*")]
    if len(lines) > 1:
        blocks.append(_section("\n".join(lines[1:])))
    if status.state == JobStatus.RUNNING and status.percent is not None:
        filled = status.percent // 10
        blocks.append({"type": "context", "elements": [
            {"type": "mrkdwn", "text": "▓" * filled + "░" * (10 - filled) + f" {status.percent}%"}]})
    return blocks


def build_restore_message(message: RestorePlanMessage) -> list[dict]:
    """The request: the plan as fields, where it stands, and how to approve; built from the typed plan."""
    p = message.plan
    fields = [
        f"*Target*\n{p.target}",
        f"*Backup*\n#{p.backup_id}: {p.backup_kind} backup of {p.backup_database} ({p.format})",
        f"*Replaces*\n{p.replaces}",
        "*Safety snapshot*\n" + ("yes" if p.safety_snapshot else "no (new target)"),
        f"*How*\n{p.method_text}",
        f"*Expected duration*\n{message.expected_text()}",
    ]
    blocks = [_section(message.headline()),
              {"type": "section", "fields": [{"type": "mrkdwn", "text": f[:1900]} for f in fields]},
              {"type": "context", "elements": [{"type": "mrkdwn", "text": message.backup_line()[:2900]}]}]
    if p.discards:  # what approvers agree to throw away (commands/restore/discards.py)
        blocks.append(_section("\n".join(p.discards)[:2900]))
    rest = [message.status_line(), *message.steps] + ([message.note] if message.note else [])
    blocks.extend(build_text_message("\n".join(rest)))
    return blocks[:MAX_BLOCKS]


def build_health_message(reports: HealthReports) -> list[dict]:
    blocks = []
    for report in reports.reports:
        lines = report.text().splitlines()
        blocks.append(_section(lines[0]))
        blocks.extend(build_text_message("\n".join(lines[1:])))
        blocks.append({"type": "divider"})
    return blocks[:-1][:MAX_BLOCKS] if blocks else build_text_message(" ")


BUILDERS = {BackupStatus: build_backup_message, RestorePlanMessage: build_restore_message,
            HealthReports: build_health_message}


def build_message_blocks(message) -> list[dict]:
    builder = BUILDERS.get(type(message))
    if builder is not None:
        return builder(message)
    return build_text_message(message.text())


def _section(text: str) -> dict:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}
