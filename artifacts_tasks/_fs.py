"""File-system primitives: atomic writes, the root lock, safe paths."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from .errors import LockHeldError, NotWritableError, UnsafeFileError

LOCK_NAME = ".lock"


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that a crash leaves the old or the new content, never a mix."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def remove_stale_temps(directory: Path) -> None:
    """Remove temp files left by an atomic write that a crash interrupted."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return
    for name in names:
        if name.startswith(".") and ".tmp-" in name:
            pid = name.rsplit(".tmp-", 1)[1]
            if pid.isdigit() and not _pid_alive(int(pid)):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(directory / name)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def root_lock(root: Path, command: str) -> Iterator[None]:
    """Hold flock(2) on `root/.lock` (flock(1) in scripts coordinates), or raise LockHeldError."""
    lock_path = root / LOCK_NAME
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeFileError(str(lock_path), "is a symlink") from None
        if exc.errno == errno.EISDIR:
            raise UnsafeFileError(str(lock_path), "is not a regular file") from None
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise NotWritableError(str(root), exc.strerror or "not writable") from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnsafeFileError(str(lock_path), "is not a regular file")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip()
            raise LockHeldError(str(lock_path), holder) from None
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        info = f"pid {os.getpid()} on {socket.gethostname()}: {command} since {stamp}\n"
        os.ftruncate(fd, 0)
        os.pwrite(fd, info.encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def open_dir_under(root: Path, rel_dir: str) -> int:
    """Open `root/rel_dir` as a directory fd without following a symlink in `rel_dir`.

    Each component is opened with O_NOFOLLOW relative to its parent, so a directory
    swapped for a symlink after a walk fails with ELOOP/ENOTDIR instead of leading out.
    """
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    for part in rel_dir.split("/") if rel_dir else ():
        try:
            child = os.open(
                part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd
            )
        finally:
            os.close(fd)
        fd = child
    return fd


def display_path(rel: str) -> str:
    """A path fit for one terminal line: control characters and undecodable bytes escaped."""
    out = []
    for ch in rel:
        if ch.isprintable() and not 0xDC80 <= ord(ch) <= 0xDCFF:
            out.append(ch)
        elif 0xDC80 <= ord(ch) <= 0xDCFF:
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    return "".join(out)
