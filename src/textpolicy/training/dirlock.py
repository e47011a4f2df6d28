"""One writer per directory: an exclusive ``fcntl.flock`` on ``<dir>/.textpolicy.lock``.

The lock is held for as long as the writer runs (a run of ``run_training``, or a whole
``tp run`` / ``tp sweep`` / ``tp campaign`` on its output directory). The operating system
releases it when the holder's file descriptor closes — also when the holder is killed — so a
dead holder never blocks anyone. A second writer fails at once with :class:`LockedError`
naming the holder's PID (written into the lock file by the holder).

``flock`` locks belong to an open file description, so two threads of one process that lock
the same directory exclude each other too. (On network filesystems ``flock`` may be local to
one machine; keep run directories on a local disk, or make sure one machine writes them.)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from types import TracebackType

from textpolicy.errors import LockedError

LOCK_NAME = ".textpolicy.lock"


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    if not text.isdigit():
        return "another process"
    pid = int(text)
    return f"process {pid}" + (" (this process)" if pid == os.getpid() else "")


class DirLock:
    """An exclusive lock on ``directory`` (created if missing).

    ``what`` names the writer in the error (``"run"``, ``"output directory"``). When the lock
    created the directory and nothing but the lock file is in it at release (a start that
    failed before writing anything), the directory is removed again.
    """

    def __init__(self, directory: str | os.PathLike[str], what: str = "directory") -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self.what = what
        self._fd: int | None = None
        self._created = False

    def acquire(self) -> DirLock:
        if self._fd is not None:
            return self
        self._created = not self.directory.exists()
        self.directory.mkdir(parents=True, exist_ok=True)
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                             0o644)
            except FileNotFoundError:  # a holder that wrote nothing just removed the folder
                self.directory.mkdir(parents=True, exist_ok=True)
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                os.close(fd)
                raise LockedError(
                    f"{self.directory}: this {self.what} is being written by {holder}; one "
                    f"writer at a time — wait for it to end (or stop it), then run again"
                ) from None
            except BaseException:
                os.close(fd)
                raise
            # The previous holder may have removed the file between our open and our lock:
            # then we hold a lock nobody else can see; open the current file again.
            mine = os.fstat(fd)
            try:
                now = os.stat(self.path, follow_symlinks=False)
            except FileNotFoundError:
                now = None
            if now is None or (now.st_ino, now.st_dev) != (mine.st_ino, mine.st_dev):
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
            self._fd = fd
            return self

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if self._created and [p.name for p in self.directory.iterdir()] == [LOCK_NAME]:
                with contextlib.suppress(OSError):
                    self.path.unlink()
                    self.directory.rmdir()
            else:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)
        finally:
            os.close(fd)

    def __enter__(self) -> DirLock:
        return self.acquire()

    def __exit__(self, _t: type[BaseException] | None, _e: BaseException | None,
                 _tb: TracebackType | None) -> None:
        self.release()
