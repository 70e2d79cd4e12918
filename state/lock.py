"""One backupbot per state database: an exclusive flock on `<state path>.lock` held for the process's life.

At start-up the bot marks every `running` job interrupted and deletes partial artifacts. That is
right after a crash and wrong while another bot is alive, so the second one must not get that
far. `flock` locks belong to the open file, so a second open in the same process conflicts as
well, and the kernel lets go when the process dies, however it dies: a lock file left on disk by
a killed bot locks nothing.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from commands.errors import InstanceLockedError


def make_private_dirs(path: Path) -> None:
    """Create `path` and its missing parents as 0700 (existing folders are left as they are)."""
    missing = []
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing.append(folder)
    for folder in reversed(missing):
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            pass


def lock_path(state_path: str | os.PathLike) -> Path:
    return Path(f"{Path(state_path).expanduser()}.lock")


class InstanceLock:
    """Held from `acquire()` until `release()` or the end of the process."""

    def __init__(self, state_path: str | os.PathLike):
        self.state_path = str(state_path)
        self.path = lock_path(state_path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> InstanceLock:
        if self._fd is not None:
            return self
        make_private_dirs(self.path.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f" (pid {holder})" if holder else ""
            raise InstanceLockedError(
                f"another backupbot is already running on {self.state_path}{who}; stop it first "
                f"(two bots on one state database would mark each other's jobs interrupted)") from None
        except OSError:
            os.close(fd)
            raise
        os.fchmod(fd, 0o600)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.ftruncate(fd, 0)
            finally:
                os.close(fd)  # closing the last descriptor drops the flock

    def __enter__(self) -> InstanceLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self):
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
