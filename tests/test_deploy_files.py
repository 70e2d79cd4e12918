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
    # the server too, not only its client: a point-in-time copy or physical drill runs in the container
    for package in ("postgresql-15", "pgbackrest", "age", "zstd", "tini", "postgresql-$major"):
        assert package in words


def test_the_image_is_built_from_files_that_exist():
    """Everything copied is in the repository, except the wheelhouse the documented `pip wheel` makes."""
    sources = [word for copy in dockerfile_instructions("COPY") if not copy.startswith("--from")
               for word in copy.split()[:-1]]
    assert sources
    assert "python3 -m pip wheel -c deploy/constraints.txt -w wheels ." in DOCKERFILE
    for source in sources:
        if source != "wheels":
            assert (ROOT / source).exists(), f"deploy/Dockerfile copies {source}, which is not in the repository"


def test_the_image_stops_on_sigterm_and_checks_its_own_health(monkeypatch):
    """tini is PID 1 (it passes SIGTERM on; bot/shutdown.py drains); the HEALTHCHECK asks the health port
    that CMD opens, with `backupbot health` (no curl in the image); zstd is there for a manual restore."""
    assert json.loads(dockerfile_instructions("ENTRYPOINT")[0]) == ["/usr/bin/tini", "--"]
    assert dockerfile_instructions("STOPSIGNAL") == ["SIGTERM"]
    (cmd,) = dockerfile_instructions("CMD")
    run_args = parsed_by_the_cli(json.loads(cmd)[1:], monkeypatch)
    (check,) = dockerfile_instructions("HEALTHCHECK")
    program, *argv = json.loads(check.split("CMD", 1)[1])
    assert program == "backupbot"
    monkeypatch.setattr("bot.health_checks.ask_health_port", lambda host, port, path: (host, port, path) == (
        "127.0.0.1", run_args.health_port, "/healthz") and 7)
    assert main(argv) == 7  # the CLI accepts the words and asks CMD's health port for /healthz
    (install,) = [run for run in dockerfile_instructions("RUN") if "apt-get install" in run]
    words = re.findall(r"[\w$.-]+", install)
    for package in ("tini", "zstd", "python3", "python3-venv"):
        assert package in words
    (pip,) = [run for run in dockerfile_instructions("RUN") if "pip install" in run]
    assert "-c /tmp/constraints.txt" in pip and "--no-index" in pip
    assert "COPY deploy/constraints.txt /tmp/constraints.txt" in DOCKERFILE


def test_the_constraints_pin_every_runtime_dependency():
    """The image and .ci/run install with deploy/constraints.txt: each pyproject dependency is pinned there."""
    import tomllib

    pins = {line.split("==")[0].lower() for line in (ROOT / "deploy" / "constraints.txt").read_text().splitlines()
            if "==" in line and not line.startswith("#")}
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for requirement in declared:
        name = re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower().replace("_", "-")
        assert name in pins, f"{name} is not pinned in deploy/constraints.txt"
    ci = (ROOT / ".ci" / "run").read_text()
    assert ci.count("-c deploy/constraints.txt") >= 2  # the wheel's venv and the test environment


def test_the_unit_stops_the_bot_first_and_waits_longer_than_the_grace_period():
    from commands.settings.jobs import JobsConfig

    settings = unit_settings()
    assert settings["KillMode"] == ["mixed"]  # SIGTERM to the bot only; its children are its to stop
    assert settings["KillSignal"] == ["SIGTERM"]
    (timeout,) = settings["TimeoutStopSec"]
    assert timeout.endswith("s") and float(timeout[:-1]) > JobsConfig().stop_grace_seconds + 15


def test_the_readme_names_the_files_paths_and_commands_of_both():
    section = readme_section()
    for name in ("deploy/Dockerfile", "deploy/backupbot.service",
                 "docker build --build-arg BASE=backupbot-base:bookworm -f deploy/Dockerfile", "deploy/constraints.txt",
                 "/etc/backupbot/env", "/etc/backupbot/backupbot.toml", DEFAULT_DATA_DIR,
                 unit_settings()["ExecStart"][0], "backupbot init", "--request-url", "`backupbot`"):
        assert name in section, f"README's Install and deploy does not mention {name}"


def test_the_repository_server_unit_reads_the_config_the_bot_writes_with_the_same_hardening(tmp_path):
    """deploy/backupbot-pgbackrest@.service (one instance per database) runs `pgbackrest server` with the
    pgbackrest.conf the bot writes for that database, as the bot's user, as hardened as backupbot.service.
    (.ci/deployment.py runs both under systemd.)"""
    from commands.backup.physical import generated_config_dir
    from commands.settings import parse_settings

    unit = (ROOT / "deploy" / "backupbot-pgbackrest@.service").read_text()
    settings = {k.strip(): v.strip() for k, _, v in (line.partition("=") for line in unit.splitlines())
                if k and not k.startswith(("#", "[")) and v}
    program, *argv = shlex.split(settings["ExecStart"])
    assert program == "/usr/bin/pgbackrest" and argv[-1] == "server"
    state = parse_settings({"state": {"path": f"{DEFAULT_DATA_DIR}/backupbot.db"}}, {})
    written = generated_config_dir(state, "main") / "pgbackrest.conf"
    assert argv[0] == "--config=" + str(written).replace("/main/", "/%i/"), argv
    hardened = unit_settings()
    for key in ("User", "Group", "NoNewPrivileges", "ProtectSystem", "ReadWritePaths", "PrivateTmp", "ProtectHome",
                "UMask", "RestrictAddressFamilies"):
        assert [settings[key]] == hardened[key], key
