"""deploy/Dockerfile and deploy/backupbot.service (no docker or systemd here): each starts a real
`backupbot` subcommand with options it accepts, runs as the non-root user `backupbot`, and uses the
paths the README's "Install and deploy" section and `backupbot init` name."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

import bot.server
from bot.cli import main
from bot.init import DEFAULT_DATA_DIR

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = (ROOT / "deploy" / "Dockerfile").read_text()
UNIT = (ROOT / "deploy" / "backupbot.service").read_text()


def readme_section() -> str:
    return (ROOT / "README.md").read_text().split("## Install and deploy", 1)[1].split("\n## ", 1)[0]


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.splitlines():
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def dockerfile_instructions(name: str) -> list[str]:
    joined = re.sub(r"\\\n", " ", DOCKERFILE)
    return [line.split(None, 1)[1] for line in joined.splitlines() if line.startswith(f"{name} ")]


def parsed_by_the_cli(argv: list[str], monkeypatch):
    """Run `backupbot ARGV` with the serving stubbed out: argparse must accept every word."""
    seen = []
    monkeypatch.setattr(bot.server, "serve", lambda args: seen.append(args) or 0)
    assert main(argv) == 0
    (args,) = seen
    return args


def test_the_unit_starts_backupbot_run_with_options_the_cli_accepts(monkeypatch):
    (exec_start,) = unit_settings()["ExecStart"]
    program, *argv = shlex.split(exec_start)
    assert program == "/opt/backupbot/bin/backupbot"
    args = parsed_by_the_cli(argv, monkeypatch)
    assert args.action == "run" and args.health_port == 3001


def test_the_cli_refuses_what_a_unit_typo_would_pass(monkeypatch):
    with pytest.raises(SystemExit) as exited:  # so the test above can fail
        parsed_by_the_cli(["run", "--health-prot", "3001"], monkeypatch)
    assert exited.value.code == 2


def test_the_unit_runs_hardened_as_backupbot_and_writes_only_the_data_dir():
    settings = unit_settings()
    assert settings["User"] == ["backupbot"]
    assert settings["EnvironmentFile"] == ["/etc/backupbot/env"]
    assert settings["Environment"] == ["BACKUPBOT_CONFIG=/etc/backupbot/backupbot.toml"]
    assert settings["Restart"] == ["on-failure"]
    assert settings["NoNewPrivileges"] == ["yes"]
    assert settings["ProtectSystem"] == ["strict"]
    assert settings["PrivateTmp"] == ["yes"]
    assert settings["ReadWritePaths"] == [DEFAULT_DATA_DIR]  # where `backupbot init` puts state and backups
    assert settings["WorkingDirectory"] == [DEFAULT_DATA_DIR]


def test_the_image_runs_backupbot_run_as_a_non_root_user_with_its_data_on_a_volume(monkeypatch):
    (cmd,) = dockerfile_instructions("CMD")
    program, *argv = json.loads(cmd)
    assert program == "backupbot"
    assert parsed_by_the_cli(argv, monkeypatch).action == "run"
    assert dockerfile_instructions("USER") == ["backupbot"]
    assert json.loads(dockerfile_instructions("VOLUME")[0]) == [DEFAULT_DATA_DIR]
    assert "BACKUPBOT_CONFIG=/etc/backupbot/backupbot.toml" in dockerfile_instructions("ENV")[0]
    (install,) = [run for run in dockerfile_instructions("RUN") if "apt-get install" in run]
    words = re.findall(r"[\w$.-]+", install)
    for package in ("postgresql-client", "pgbackrest", "age", "postgresql-client-$major"):
        assert package in words


def test_the_image_is_built_from_files_that_exist():
    sources = [word for copy in dockerfile_instructions("COPY") if not copy.startswith("--from")
               for word in copy.split()[:-1]]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), f"deploy/Dockerfile copies {source}, which is not in the repository"


def test_the_readme_names_the_files_paths_and_commands_of_both():
    section = readme_section()
    for name in ("deploy/Dockerfile", "deploy/backupbot.service", "docker build -f deploy/Dockerfile",
                 "/etc/backupbot/env", "/etc/backupbot/backupbot.toml", DEFAULT_DATA_DIR,
                 unit_settings()["ExecStart"][0], "backupbot init", "--request-url", "`backupbot`"):
        assert name in section, f"README's Install and deploy does not mention {name}"
