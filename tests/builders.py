"""Plain builders tests share: settings for a database, a console around them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from bot.console import Console
from bot.startup import start_services
from commands.settings import Settings, parse_settings

# Access fails closed (no operators: nobody may run /backup), so test settings name their operators.
# A test that wants none passes access={"operators": []}.
TEST_OPERATORS = ("U0OPS", "U0ALICE", "U0BOB")


def make_settings(tmp_path: Path, dsn: str | None, storage_url: str | None = None, access: dict | None = None,
                  env: dict | None = None, **sections) -> Settings:
    raw = {
        "state": {"path": str(tmp_path / "state.db")},
        "storage": {"url": storage_url or f"file://{tmp_path / 'backups'}"},
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
