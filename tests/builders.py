"""Plain builders tests share: settings for a database, a console around them."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bot.console import Console
from bot.startup import start_services
from commands.backup.manifest import manifest_bytes
from commands.settings import Settings, parse_settings
from commands.signing import write_key_file
from state.backups import get_backup

# Access fails closed (no operators: nobody may run /backup), so test settings name their operators.
# A test that wants none passes access={"operators": []}.
TEST_OPERATORS = ("U0OPS", "U0ALICE", "U0BOB")


def suite_signing_key() -> str:
    """The suite's signing key: one key, as an organisation keeps one off its hosts, so a "new host" in a
    disaster-recovery test verifies what the first one signed. Made once per test process, 0600."""
    global _SIGNING_KEY
    if _SIGNING_KEY is None:
        path = Path(tempfile.mkdtemp(prefix="backupbot-test-key-")) / "signing.key"
        write_key_file(path)
        _SIGNING_KEY = str(path)
    return _SIGNING_KEY


_SIGNING_KEY: str | None = None


def make_settings(tmp_path: Path, dsn: str | None, storage_url: str | None = None, access: dict | None = None,
                  env: dict | None = None, **sections) -> Settings:
    storage = {"url": storage_url or f"file://{tmp_path / 'backups'}", "signing_key_files": [suite_signing_key()],
               **sections.pop("storage", {})}
    raw = {
        "state": {"path": str(tmp_path / "state.db")},
        "storage": storage,
        **sections,
    }
    raw["access"] = {"operators": list(TEST_OPERATORS), **(access or {})}
    full_env = dict(env or {})
    if dsn:
        full_env["DATABASE_URL"] = dsn
    return parse_settings(raw, full_env)


def make_console(settings: Settings, user: str = "U0OPS", **overrides) -> Console:
    """A console that plays Slack users, as the demo does, so a test can be an operator or an approver
    (outside the demo the CLI's console is its OS user: tests/test_console_identity.py)."""
    services = start_services(settings, **overrides)
    files = Path(settings.state_path).parent / "files"
    return Console(services, user=user, channel="C0OPS", files_dir=files, plays_slack_users=True)


def resign_manifest(console: Console, backup_id: int) -> None:
    """Write the backup's manifest again from its catalog row, signed with the suite's key: for tests that change a
    catalog row to model what the bot itself would have recorded (a local store)."""
    store, settings = console.services.store, console.services.settings
    record = get_backup(store, backup_id)
    root = Path(settings.storage_url.removeprefix("file://"))
    (root / record.manifest_key).write_bytes(manifest_bytes(record, settings.signing))


def store_as_if_pg_dump_wrote(console: Console, backup_id: int, data: bytes) -> None:
    """Replace a local backup's artifact with `data` as if pg_dump had produced it: the catalog's sha256
    and the signed manifest describe the new bytes, so only what happens at restore time can fail."""
    store, settings = console.services.store, console.services.settings
    record = get_backup(store, backup_id)
    root = Path(settings.storage_url.removeprefix("file://"))
    (root / record.key).write_bytes(data)
    with store.db() as db:
        db.execute("UPDATE backups SET sha256 = ? WHERE id = ?", [hashlib.sha256(data).hexdigest(), backup_id])
    resign_manifest(console, backup_id)


SLACK_PLAYER = ("import sys; from bot.console import Console; from bot.startup import start_services; "
                "from commands.settings import load_settings; Console(start_services(load_settings(sys.argv[1])), "
                "user='U0OPS', out=sys.stdout, plays_slack_users=True).loop()")


def slack_console_process(config: Path, dsn: str) -> subprocess.Popen:
    """A bot process whose console plays Slack users (the CLI's plays them only in the demo), so a test can approve
    from inside the process it kills or watches; stdin, stdout and stderr are pipes."""
    env = {"DATABASE_URL": dsn, "PATH": os.environ["PATH"], "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-c", SLACK_PLAYER, str(config)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


class FakeClock:
    """An injected clock: tests move time forward instead of sleeping."""

    def __init__(self, start: datetime | None = None):
        self.now = start or datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta) -> datetime:
        self.now += timedelta(**delta)
        return self.now


class Recorder:
    """A Reply that records what scheduled jobs post, and where."""

    def __init__(self):
        self.posts: list[tuple[str | None, str]] = []

    def post(self, message, channel=None):
        self.posts.append((channel, message.text()))
        return f"{channel}:{len(self.posts)}"

    def update(self, message_id, message):
        self.posts.append((message_id.split(":")[0], message.text()))

    def ephemeral(self, message):
        self.posts.append((None, message.text()))

    def thread(self, message_id, message):
        return self.post(message, message_id.split(":")[0])

    def react(self, message_id, emoji):
        pass

    def texts(self, channel):
        return [text for ch, text in self.posts if ch == channel]


def wait_for(condition, what: str, seconds: float = 60):
    """Poll a condition on a real server or process, bounded; returns what it found. Never a sleep
    standing in for a schedule: schedules take an injected clock."""
    deadline = time.monotonic() + seconds
    while not (found := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return found
