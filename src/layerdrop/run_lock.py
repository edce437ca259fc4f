"""One training run per save directory.

``SAVE_DIR/.lock`` holds the owner's process id. The lock itself is an ``flock`` on that file: the
kernel takes it atomically and releases it when the process exits, however it exits, so a lock left
by a killed run is stale by construction and the next run simply takes it over.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

from layerdrop.errors import UserError

LOCK_NAME = ".lock"


class SaveDirLock:
    def __init__(self, save_dir: Path, flag: str = "--save-dir"):
        self.save_dir, self.flag = Path(save_dir), flag
        self.path = self.save_dir / LOCK_NAME
        self._fd: int | None = None
        self._created_dir = False
        self.stale_owner: str | None = None  # who held a lock that was left behind, if anyone

    def __enter__(self) -> SaveDirLock:
        if self.save_dir.exists() and not self.save_dir.is_dir():
            raise UserError(f"{self.flag}: {str(self.save_dir)!r} is a file; valid: a directory (new or from an earlier run)")
        try:
            self._created_dir = not self.save_dir.exists()
            self.save_dir.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise UserError(f"{self.flag}: cannot write in {str(self.save_dir)!r} ({error.strerror}); "
                            "valid: a writable directory") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = self._read_owner()
            os.close(self._fd)
            self._fd = None
            raise UserError(f"{self.flag}: {str(self.save_dir)!r} is in use by another training run ({owner}); "
                            "valid: wait for it to finish, stop it, or use another --save-dir") from None
        except OSError as error:  # a filesystem without flock (some NFS, Lustre, FUSE mounts)
            os.close(self._fd)
            self._fd = None
            raise UserError(f"{self.flag}: cannot lock {str(self.path)!r} ({error.strerror}); the filesystem does not "
                            "support flock; valid: a --save-dir on a local filesystem") from None
        self.stale_owner = self._read_owner() or None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        os.fsync(self._fd)
        return self

    def _read_owner(self) -> str:
        try:
            return os.pread(self._fd, 200, 0).decode(errors="replace").strip()
        except OSError:
            return "process unknown"

    def __exit__(self, *exc) -> None:
        if self._fd is None:
            return
        # The run failed before writing anything: leave no empty directory behind (unlinked while still held).
        empty = self._created_dir and [p.name for p in self.save_dir.iterdir()] == [LOCK_NAME]
        if empty:
            self.path.unlink(missing_ok=True)
        else:  # so a reader never names a finished process as the owner
            os.ftruncate(self._fd, 0)
        os.close(self._fd)  # releases the flock
        self._fd = None
        if empty:
            try:
                self.save_dir.rmdir()
            except OSError:  # another run has just started there
                pass
