"""One backup job's channel message, logical or physical: what it is, while it runs, its verdict.

Both engines' messages have the same shape (a headline naming the job and who started it, a line
while it runs, the result or the failure), so the shape and the fields every backup job has are
written once here, as `BackupJobStatus`; each engine's variant (`BackupStatus` in command.py,
`PhysicalBackupStatus` in physical.py) adds its own fields and says only how its lines read.
"""

from __future__ import annotations

from dataclasses import dataclass

from state.backups import Backup
from state.statuses import JobStatus


@dataclass(frozen=True, kw_only=True)
class BackupJobStatus:
    """One backup job as its channel message shows it, from start to final verdict."""

    job_id: int
    database: str
    user: str | None
    kind: str = "manual"
    state: JobStatus = JobStatus.RUNNING
    elapsed: float = 0.0
    record: Backup | None = None
    error: str | None = None

    title = "Backup"  # how the headline names the job
    not_stored = "Nothing was stored as a backup."

    def headline(self) -> str:
        who = f" started by <@{self.user}>" if self.user else f" ({self.kind})"
        return f"{self.title} #{self.job_id} of {self.database}{who}"

    def what(self) -> str:
        """What is backed up, after the headline."""
        raise NotImplementedError

    def running_line(self) -> str:
        raise NotImplementedError

    def result_lines(self) -> list[str]:
        raise NotImplementedError

    def failed_line(self) -> str:
        return f":x: {self.title} #{self.job_id} failed: {self.error}"

    def note_lines(self) -> list[str]:
        return []

    def text(self) -> str:
        lines = [self.headline() + f" — {self.what()}", *self.note_lines()]
        if self.state == JobStatus.RUNNING:
            lines.append(self.running_line())
        elif self.state == JobStatus.SUCCEEDED and self.record:
            lines.extend(self.result_lines())
        else:
            lines.append(self.failed_line())
            lines.append(self.not_stored)
        return "\n".join(lines)
