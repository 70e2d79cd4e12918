"""The bot instance's private scratch: decrypted and decompressed restore inputs, and the data
directories of point-in-time copies.

Those files are production data in the clear. In a shared /tmp, or under a fixed name in /var/tmp,
another local user could read them, create the folder first, or plant a symlink where the bot
writes. So they live under one root that belongs to this instance: `[state] scratch_dir`, by
default `scratch` beside the state database. The root is 0700 (0711 once a cluster running as
another OS user, `postgres` when the bot is root, must pass through it to its own job folder,
which is 0700 and that user's). A root that is a symlink, is owned by someone else, or is writable
by its group or others is refused. Files are created 0600.

A killed bot cleans nothing, so `clean_scratch()` runs at start (under the instance lock, after
interrupted restores were handled): everything there goes, except the point-in-time copies that
were restored and verified, which stay until `/restore drop-copy` or `[restore] copy_ttl_hours`
drops them (commands/restore/copies.py).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import stat
import subprocess
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from commands.errors import ConfigError
from commands.pg.tools import pg_bin

KEEP_SUFFIX = ".keep"  # `<job>.keep` beside a job folder: a verified copy someone may be using
_memory_root: Path | None = None


def scratch_root(settings) -> Path:
    """Where this instance's scratch lives (not created here)."""
    global _memory_root
    if settings.scratch_dir:
        return Path(settings.scratch_dir).expanduser().absolute()
    if settings.state_path == ":memory:":  # no state file to sit beside: a private folder for this process
        if _memory_root is None or not _memory_root.exists():
            _memory_root = Path(tempfile.mkdtemp(prefix="backupbot-scratch-"))
        return _memory_root
    return Path(settings.state_path).expanduser().absolute().parent / "scratch"


def ensure_root(settings, traverse: bool = False) -> Path:
    """The root, created if missing and checked every time: a symlink, someone else's folder or one
    others can write into is refused; `traverse` lets other users pass through (never list)."""
    root = scratch_root(settings)
    root.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        root.mkdir(mode=0o700)
    info = os.lstat(root)
    where = f"the scratch folder {root} ([state] scratch_dir)"
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"{where} is a symlink or not a folder: refusing to put restore files there")
    if info.st_uid != os.geteuid():
        raise ConfigError(f"{where} belongs to uid {info.st_uid}, not to this bot: refusing to put restore files there")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o022:
        raise ConfigError(f"{where} is writable by others (mode {mode:04o}): refusing to put restore files there")
    wanted = 0o711 if traverse or mode & 0o001 else 0o700
    if mode != wanted:
        os.chmod(root, wanted)
    return root


def job_path(settings, kind: str, *names: str) -> Path:
    """A new job folder's path, e.g. `<root>/pitr-main-20261129T140400-1a2b3c` (not created)."""
    stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%S}"
    return scratch_root(settings) / "-".join([kind, *names, stamp, secrets.token_hex(3)])


def _user_ids(user: str | None) -> tuple[int, int] | None:
    if not user:
        return None
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise ConfigError(f"there is no OS user {user!r} to run restored clusters as") from None
    return (entry.pw_uid, entry.pw_gid) if entry.pw_uid != os.geteuid() else None


def check_reachable(settings, user: str | None) -> None:
    """`user` (a cluster's OS owner) must be able to pass through every folder above the root;
    say which one stops it before anyone is asked, not half-way through a restore."""
    ids = _user_ids(user)
    if ids is None:
        return
    groups = set(os.getgrouplist(user, ids[1]))
    root = scratch_root(settings)
    for folder in reversed(root.parents):
        try:
            info = os.stat(folder)
        except FileNotFoundError:  # created 0700 by ensure_root, and checked again once it exists
            break
        bit = stat.S_IXUSR if info.st_uid == ids[0] else stat.S_IXGRP if info.st_gid in groups else stat.S_IXOTH
        if not info.st_mode & bit:
            raise ConfigError(f"the {user} user, which runs restored clusters, cannot pass through {folder} "
                              f"(mode {stat.S_IMODE(info.st_mode):04o}) to the scratch folder {root}: set "
                              "[state] scratch_dir to a folder it can reach (e.g. /var/lib/backupbot-scratch)")


def make_job_dir(settings, path: Path, owner: str | None = None) -> Path:
    """Create the job folder `path` (0700, given to `owner` when that is another OS user); it must
    sit directly in this instance's root."""
    ids = _user_ids(owner)
    root = ensure_root(settings, traverse=ids is not None)
    path = Path(path)
    if path.parent != root:
        raise ConfigError(f"{path} is not in this bot's scratch folder {root}: it was planned elsewhere "
                          "(by an older backupbot, or with another [state] scratch_dir); ask again")
    if ids is not None:
        check_reachable(settings, owner)
    path.mkdir(mode=0o700)
    if ids is not None:
        os.chown(path, *ids)
    return path


@contextlib.contextmanager
def job_dir(settings, kind: str):
    """A job folder that is removed when the job ends, however it ends."""
    path = make_job_dir(settings, job_path(settings, kind))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def private_file(path: Path):
    """A new file only its owner can read (0600), opened for binary writing; never through a symlink."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    return os.fdopen(fd, "wb")


def keep(path: Path) -> None:
    """Mark a job folder as a result to keep (a verified point-in-time copy) across restarts."""
    with private_file(Path(f"{path}{KEEP_SUFFIX}")) as marker:
        marker.write(b"restored and verified; `/restore drop-copy` or [restore] copy_ttl_hours removes it\n")


def remove_job(settings, path: Path, mode: str = "immediate") -> bool:
    """Stop a server still running in the job folder `path` (pg_ctl stop -m `mode`, as the folder's
    owner), then delete it; only ever a folder directly in this instance's root (never a live cluster
    elsewhere)."""
    path = Path(path)
    if path.parent != scratch_root(settings) or path.is_symlink() or not path.is_dir():
        return False
    if (path / "postmaster.pid").exists():
        argv = [pg_bin("pg_ctl"), "-D", str(path), "-m", mode, "-w", "stop"]
        owner = os.stat(path).st_uid
        if owner != os.geteuid():
            argv = ["runuser", "-u", pwd.getpwuid(owner).pw_name, "--", *argv]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        subprocess.run(argv, capture_output=True, timeout=120, env=env, cwd="/", stdin=subprocess.DEVNULL)
    shutil.rmtree(path, ignore_errors=True)
    Path(f"{path}{KEEP_SUFFIX}").unlink(missing_ok=True)
    return True


def clean_scratch(settings) -> list[str]:
    """At start: remove what killed jobs left in the root (stopping any server they had started);
    keep verified copies. Returns one line per removed folder."""
    if settings.state_path == ":memory:" and not settings.scratch_dir:
        return []  # a fresh folder of this process, and no instance lock to say nobody else uses it
    root = ensure_root(settings)
    removed = []
    for entry in sorted(root.iterdir()):
        if entry.name.endswith(KEEP_SUFFIX):
            if not (root / entry.name[: -len(KEEP_SUFFIX)]).exists():
                entry.unlink(missing_ok=True)
            continue
        if Path(f"{entry}{KEEP_SUFFIX}").exists():
            continue
        if entry.is_dir() and not entry.is_symlink():
            remove_job(settings, entry)
        else:
            entry.unlink(missing_ok=True)
        removed.append(f"removed {entry}, left in the scratch folder by a job that was killed")
    return removed
