"""File-system primitives: atomic writes, the root lock, safe paths."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import fnmatch
import os
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            failpoint(f"write:{path.name}")  # the temp is whole, the old file still in place
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        fsync_dir(path.parent)
    except OSError as exc:
        if exc.filename is None or exc.filename == str(tmp):  # name the file the user knows
            exc.filename = str(path)
        raise


def remove_stale_temps(directory: Path) -> None:
    """Remove temp files left by an atomic write that a crash interrupted."""
    try:
        if not stat.S_ISDIR(os.lstat(directory).st_mode):
            return  # a symlink is never followed
        names = os.listdir(directory)
    except OSError:
        return  # best effort: an unreadable directory is someone else's to report
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
        _take_or_raise(fd, lock_path)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        info = f"pid {os.getpid()} on {socket.gethostname()}: {command} since {stamp}\n"
        with contextlib.suppress(OSError):  # who holds it is a courtesy (a full disk)
            os.ftruncate(fd, 0)
            os.pwrite(fd, info.encode(), 0)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _take_or_raise(fd: int, lock_path: Path) -> None:
    """flock(LOCK_EX|LOCK_NB), or LockHeldError naming the holder.

    A holder writes its line just after taking the lock and empties it just before
    letting go; a refusal that finds the line empty looks again a few times (50 ms in
    all), so that it names the holder, or takes the lock that was being let go.
    """
    holder = ""
    for _ in range(10):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
        holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip()
        if holder:
            break
        time.sleep(0.005)
    pid, _, rest = holder.removeprefix("pid ").partition(" on ")
    here = rest.startswith(f"{socket.gethostname()}:")
    if holder.startswith("pid ") and pid.isdigit() and here and not _pid_alive(int(pid)):
        # A writer killed outright leaves its line; the holder now is someone else
        # (flock(1) in a script, say).
        holder = f"holder unknown; the last recorded writer ({holder}) has exited"
    raise LockHeldError(str(lock_path), holder)


def open_dir_under(root: Path, rel_dir: str, *, create: bool = False) -> int:
    """Open `root/rel_dir` as a directory fd without following a symlink in `rel_dir`.

    Each component is opened with O_NOFOLLOW relative to its parent, so a directory
    swapped for a symlink after a walk fails with ELOOP/ENOTDIR instead of leading out.
    `create` makes missing directories on the way (mode 0o755).
    """
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    for part in rel_dir.split("/") if rel_dir else ():
        try:
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=fd)
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


def parent_and_name(rel: str) -> tuple[str, str]:
    """`a/b/c.json` -> (`a/b`, `c.json`); `c.json` -> (``, `c.json`)."""
    head, _, name = rel.rpartition("/")
    return head, name


def makedirs_under(root: Path, rel_dir: str) -> int:
    """`open_dir_under`, creating missing directories on the way."""
    return open_dir_under(root, rel_dir, create=True)


def lstat_under(root: Path, rel: str) -> os.stat_result | None:
    """lstat of `root/rel` without following a symlink on the way; None when it is absent.

    A directory on the way that is now a symlink raises OSError(ELOOP or ENOTDIR).
    """
    head, name = parent_and_name(rel)
    try:
        fd = open_dir_under(root, head)
    except FileNotFoundError:
        return None
    try:
        return os.stat(name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    finally:
        os.close(fd)


_RENAME_NOREPLACE = 1


def rename_noreplace(src: str, dst: str, *, src_dir_fd: int, dst_dir_fd: int) -> None:
    """Rename, but never over an existing `dst` (FileExistsError instead).

    renameat2(RENAME_NOREPLACE) where the kernel and file system have it; elsewhere a
    hard link (which refuses an existing name) then unlinking the source. A crash between
    the two leaves both names on one inode, which recovery recognises.
    """
    import ctypes

    libc = _libc()
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is not None:
        if (
            renameat2(src_dir_fd, os.fsencode(src), dst_dir_fd, os.fsencode(dst), _RENAME_NOREPLACE)
            == 0
        ):
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
            raise OSError(err, os.strerror(err), src, None, dst)
    os.link(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd, follow_symlinks=False)
    os.unlink(src, dir_fd=src_dir_fd)


_LIBC: object = None


def _libc() -> Any:
    global _LIBC
    if _LIBC is None:
        import ctypes

        # The process's own symbols, libc's among them: find_library("c") would fork
        # `ldconfig -p` on every first call (and shift what strace counts in the tests).
        _LIBC = ctypes.CDLL(None, use_errno=True)
    return _LIBC


def sync_filesystem(path: Path) -> None:
    """Make every write on `path`'s file system durable: syncfs(2), or sync(2) without it."""
    import ctypes

    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        syncfs = getattr(_libc(), "syncfs", None)
        if syncfs is None:
            os.sync()
        elif syncfs(fd) != 0:
            err = ctypes.get_errno()
            if err != errno.ENOSYS:  # a write-back error (EIO, ENOSPC): nothing is durable
                raise OSError(err, os.strerror(err), str(path))
            os.sync()
    finally:
        os.close(fd)


FAILPOINT_ENV = "ARTIFACTS_FAILPOINT"
FAILPOINT_TRACE_ENV = "ARTIFACTS_FAILPOINT_TRACE"
_failpoint_hits: dict[str, int] = {}


def failpoint(name: str) -> None:
    """For the crash tests: `ARTIFACTS_FAILPOINT=name` (or `name:N`, the Nth time) makes
    the process SIGKILL itself here, as a power cut would stop it. The name may be a glob
    (`write:gc_report_*.md`), for the steps whose names hold a time.

    `ARTIFACTS_FAILPOINT_TRACE=FILE` appends each point's name to FILE as it passes, so a
    sweep can list every step of an operation and then kill it at each in turn."""
    trace = os.environ.get(FAILPOINT_TRACE_ENV)
    if trace:
        with open(trace, "a", encoding="utf-8") as f:
            f.write(name + "\n")
    wanted = os.environ.get(FAILPOINT_ENV)
    if not wanted:
        return
    point, _, nth = wanted.rpartition(":")
    if not nth.isdigit():  # `name` alone (a name may hold a colon: `write:.pins.json`)
        point, nth = wanted, ""
    if not fnmatch.fnmatchcase(name, point):
        return
    _failpoint_hits[point] = hits = _failpoint_hits.get(point, 0) + 1
    if hits == (int(nth) if nth.isdigit() else 1):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
