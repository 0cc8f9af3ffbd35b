"""Recheck every file against the checksum the manifest recorded for it.

Unlike every other command, verification does not refresh the manifest first: a refresh
rehashes files whose size or times changed and would absorb exactly the edits that
`verify` is there to report.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import xxhash

from . import _fs
from .manifest import Manifest
from .progress import NoProgress, Progress


@dataclass(frozen=True)
class Problem:
    """A file that is not as the manifest says: missing, changed or unreadable."""

    entry_id: str
    path: str
    problem: str


def verify(
    root: Path, manifest: Manifest, *, buffer: int, progress: Progress | None = None
) -> Iterator[Problem]:
    """Yield a Problem for every recorded file whose bytes are not the recorded ones."""
    progress = progress or NoProgress()
    files = list(manifest.files())
    progress.start(len(files), sum(f.size for _, f in files))
    try:
        for entry, record in files:
            problem = _check(root, record.path, record.size, record.xxh3_128, buffer)
            if problem is not None:
                yield Problem(entry.id, record.path, problem)
            progress.advance(1, record.size)
    finally:
        progress.close()


def _check(root: Path, rel: str, size: int, expected: str, buffer: int) -> str | None:
    directory, _, name = rel.rpartition("/")
    try:
        dir_fd = _fs.open_dir_under(root, directory)
        try:
            fd = os.open(
                name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd
            )
        finally:
            os.close(dir_fd)
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            return "replaced by a symlink (not followed)"
        return f"unreadable ({exc.strerror})"
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return "not a regular file"
        h = xxhash.xxh3_128()
        read = 0
        while chunk := os.read(fd, buffer):
            h.update(chunk)
            read += len(chunk)
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    finally:
        os.close(fd)
    if h.hexdigest() != expected:
        return (
            f"changed (size {size} -> {read}, checksum differs)"
            if read != size
            else ("changed (same size, checksum differs)")
        )
    return None
