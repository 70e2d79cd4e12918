"""The commands in manifest.yml, the README and the registered Bolt handlers are one set."""

from __future__ import annotations

import re
from pathlib import Path

from commands import dispatch

ROOT = Path(__file__).resolve().parent.parent


def manifest_commands() -> set[str]:
    text = (ROOT / "manifest.yml").read_text()
    return set(re.findall(r"^\s*- command: (/[a-z-]+)\s*$", text, re.M))


def readme_commands() -> set[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Commands", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^### `(/[a-z-]+)", section, re.M))


def bolt_commands(tmp_path, monkeypatch) -> set[str]:
    """The commands create_app really registers with Bolt."""
    from slack_bolt import App
    from slack_sdk import WebClient

    from bot.app import create_app
    from tests.builders import make_settings
    from tests.fix_slack import FakeSlackWebAPI

    seen = set()
    original = App.command

    def spy(self, command, *args, **kwargs):
        if isinstance(command, str):  # the catch-all for unknown commands is a pattern
            seen.add(command)
        return original(self, command, *args, **kwargs)

    monkeypatch.setattr(App, "command", spy)
    settings = make_settings(tmp_path, None, env={"SLACK_SIGNING_SECRET": "x" * 32})
    fake = FakeSlackWebAPI()
    try:
        create_app(settings, WebClient(token="xoxb-unused", base_url=fake.url))
    finally:
        fake.close()
    return seen


def test_manifest_readme_and_handlers_agree(tmp_path, monkeypatch):
    registered = bolt_commands(tmp_path, monkeypatch)
    assert registered == set(dispatch.COMMANDS)
    assert manifest_commands() == registered, "manifest.yml and the registered handlers differ"
    assert readme_commands() == registered, "README's ## Commands and the registered handlers differ"


def test_manifest_subscribes_to_the_events_the_app_handles():
    from bot.app import REACTION_EVENTS

    text = (ROOT / "manifest.yml").read_text()
    for event in REACTION_EVENTS:
        assert f"- {event}" in text
    assert "socket_mode_enabled: true" in text
    for scope in ("commands", "chat:write", "reactions:read", "reactions:write", "usergroups:read"):
        assert f"- {scope}" in text


def manifest_hints() -> dict[str, str]:
    import yaml

    manifest = yaml.safe_load((ROOT / "manifest.yml").read_text())
    return {c["command"]: c["usage_hint"] for c in manifest["features"]["slash_commands"]}


def test_manifest_usage_hints_are_the_handlers_own():
    assert manifest_hints() == {name: spec.usage_hint for name, spec in dispatch.COMMANDS.items()}


# Web API methods the bot calls -> the scope each needs (reactions and commands come by event)
METHOD_SCOPES = {
    "chat_postMessage": "chat:write", "chat_update": "chat:write", "chat_postEphemeral": "chat:write",
    "reactions_add": "reactions:write", "conversations_history": "channels:history",
    "conversations_replies": "channels:history", "conversations_info": "channels:read",
    "conversations_join": "channels:join", "usergroups_users_list": "usergroups:read", "files_upload_v2": "files:write",
}
# scopes the bot needs without calling a method by that name
IMPLIED_SCOPES = {"commands", "reactions:read", "chat:write.public", "groups:history", "groups:read"}


def test_manifest_asks_for_exactly_the_scopes_the_bot_uses():
    import yaml

    source = "".join(p.read_text() for p in (ROOT / "bot").glob("*.py"))
    called = {m for m in METHOD_SCOPES if re.search(rf"\.{m}\(", source)}
    needed = {METHOD_SCOPES[m] for m in called} | IMPLIED_SCOPES
    manifest = yaml.safe_load((ROOT / "manifest.yml").read_text())
    assert set(manifest["oauth_config"]["scopes"]["bot"]) == needed
    assert manifest["settings"]["interactivity"]["is_enabled"] is False  # approvals are reactions
