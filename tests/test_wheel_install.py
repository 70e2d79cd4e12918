"""The README's first command as a new user runs it: `pip install .` (a built wheel, not an editable
install) into a fresh virtual environment outside the checkout, then `backupbot console --demo`
scripted end to end from another directory.

The venv sees this interpreter's installed dependencies as plain path entries, so nothing is
downloaded; the checkout's own editable-install hook (a .pth file there) is not run, so a package left
out of the wheel fails here instead of being quietly imported from the checkout.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bot", "commands", "state")
DEMO_SCRIPT = "\n".join([
    "/backup",
    "/restore latest",
    ":as U0APPROVER",  # the demo's approver (bot/cli.py)
    ":react M2 white_check_mark",  # M2 is the restore request
    ":as U_CONSOLE",
    "/backup verify latest",
]) + "\n"


def _run(argv: list[str], cwd: Path, timeout: int = 300, stdin: str | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "BACKUPBOT_CONFIG", "DATABASE_URL")}
    done = subprocess.run(argv, cwd=cwd, input=stdin, capture_output=True, text=True, timeout=timeout, env=env)
    assert done.returncode == 0, (f"{Path(argv[0]).name} {argv[1][:40]} exited {done.returncode}:\n"
                                  f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def wheel_install(tmp_path_factory):
    """(wheel path, venv dir, a working directory outside the checkout)."""
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "manifest.yml"):
        shutil.copy2(ROOT / name, src / name)
    for package in PACKAGES:  # a copy, so no build/ or *.egg-info of the checkout ends up in the wheel
        shutil.copytree(ROOT / package, src / package, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    dist = base / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(dist), str(src)], cwd=base)
    (wheel,) = dist.glob("backupbot-*.whl")

    venv = base / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=base)
    venv_site = Path(_run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          cwd=base).strip())
    system_dirs = [d for d in [*site.getsitepackages(), site.getusersitepackages()] if Path(d).is_dir()]
    (venv_site / "zz_system_dependencies.pth").write_text("".join(f"{d}\n" for d in system_dirs))
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
         cwd=base)
    cwd = base / "elsewhere"
    cwd.mkdir()
    return wheel, venv, cwd


def test_the_wheel_holds_every_module_of_the_checkout(wheel_install):
    wheel, _, _ = wheel_install
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    in_checkout = {
        path.relative_to(ROOT).as_posix()
        for package in PACKAGES for path in (ROOT / package).rglob("*.py") if "__pycache__" not in path.parts
    }
    assert in_checkout - in_wheel == set()
    assert "bot/manifest.yml" in in_wheel  # `backupbot init` builds the Slack manifest from it


def test_every_module_imports_from_the_venv_not_the_checkout(wheel_install):
    _, venv, cwd = wheel_install
    modules = sorted(
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for package in PACKAGES for path in (ROOT / package).rglob("*.py") if "__pycache__" not in path.parts
    )
    script = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    module = importlib.import_module(name)\n"
        "    if not module.__file__.startswith(sys.prefix):\n"
        "        print('outside the venv:', name, module.__file__)\n"
        "print('imported all')\n"
    )
    out = _run([str(venv / "bin" / "python"), "-c", script], cwd=cwd)
    assert "outside the venv" not in out
    assert "imported all" in out


def test_the_readme_demo_runs_end_to_end_from_the_installed_wheel(wheel_install):
    _, venv, cwd = wheel_install
    out = _run([str(venv / "bin" / "backupbot"), "console", "--demo"], cwd=cwd, stdin=DEMO_SCRIPT, timeout=180)
    assert "Backup #1 of main succeeded" in out
    assert "RESTORED and verified" in out
    assert "Drill of backup #1 (main) passed" in out
    assert "Traceback" not in out


def test_init_from_the_installed_wheel_prints_the_manifest_it_ships(wheel_install):
    _, venv, cwd = wheel_install
    out = _run([str(venv / "bin" / "backupbot"), "init", "--manifest-only", "--request-url", "https://bot.example.com"],
               cwd=cwd)
    assert "url: https://bot.example.com/slack/events" in out
    assert "- command: /backup" in out
