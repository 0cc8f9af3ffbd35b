"""The errors the tool expects, each carrying its facts and its exit code."""

from __future__ import annotations

import errno
import os

# Exit codes (DESIGN §6).
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
EXIT_LOCKED = 4
EXIT_INTERRUPTED = 130


class ArtifactsError(Exception):
    """Base of every expected error: one clear line, a documented exit code."""

    exit_code = EXIT_FAILED
    label = "error"  # how the CLI starts the line: `error: ...`, `config error: ...`

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(ArtifactsError):
    """Bad command-line use: nothing was touched."""

    exit_code = EXIT_USAGE


class ConfigError(ArtifactsError):
    """The config file is unreadable, not YAML, or fails its schema."""

    exit_code = EXIT_USAGE
    label = "config error"

    def __init__(self, file: str, key_path: str, problem: str) -> None:
        self.file = file
        self.key_path = key_path
        self.problem = problem
        where = f"{file}: {key_path}: " if key_path else f"{file}: "
        super().__init__(f"{where}{problem}")


class ManifestError(ArtifactsError):
    """The manifest (or pins file) on disk cannot be trusted."""

    exit_code = EXIT_USAGE
    label = "manifest error"

    def __init__(self, file: str, problem: str, *, hint: str | None = None) -> None:
        self.file = file
        self.problem = problem
        fix = hint or "run `cryptorun artifacts scan --force` to rebuild it from the file system"
        super().__init__(f"{file}: {problem}; {fix}")


class ScanLimitError(ArtifactsError):
    """The tree holds more artifact files than `indexing.max_files_per_scan` allows."""

    exit_code = EXIT_USAGE

    def __init__(self, root: str, limit: int) -> None:
        self.limit = limit
        super().__init__(
            f"scan stopped: {root} holds more than {limit} artifact files "
            "(indexing.max_files_per_scan); raise the limit in the config or scan a smaller root"
        )


class UnknownIdError(ArtifactsError):
    """An entry id that the manifest does not know."""

    exit_code = EXIT_USAGE

    def __init__(self, entry_id: str, close: list[str]) -> None:
        self.entry_id = entry_id
        self.close = close
        hint = (
            f"; did you mean {', '.join(close)}?" if close else "; see `cryptorun artifacts list`"
        )
        super().__init__(f"unknown id {entry_id!r}{hint}")


class LockHeldError(ArtifactsError):
    """Another writer holds the root's lock."""

    exit_code = EXIT_LOCKED

    def __init__(self, lock_path: str, holder: str) -> None:
        self.lock_path = lock_path
        self.holder = holder
        super().__init__(
            f"another writer holds {lock_path} ({holder or 'holder unknown'}); "
            "wait for it to finish and retry"
        )


class UnsafeFileError(ArtifactsError):
    """A file the tool writes is a symlink or not a regular file: it is never followed."""

    exit_code = EXIT_USAGE

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        super().__init__(f"{path} {problem}; the tool never writes through it. Remove it and retry")


class NotWritableError(ArtifactsError):
    """The root cannot be written by this user, so no writing command can run there."""

    def __init__(self, root: str, why: str) -> None:
        self.root = root
        self.why = why
        super().__init__(
            f"cannot write in {root} ({why}); run as a user who may write there, "
            "or use `list` to read the last saved manifest"
        )


class PlanValidationError(ArtifactsError):
    """The gc plan broke a rule that must hold before anything is deleted: nothing moved."""

    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(f"GC plan validation failed: {problem}; nothing was moved")


class ApplyError(ArtifactsError):
    """An apply (gc, restore, purge) could not be carried out; what it did was undone."""


class JournalError(ArtifactsError):
    """The journal of an interrupted apply cannot be trusted: nothing is touched."""

    exit_code = EXIT_USAGE
    label = "journal error"

    def __init__(self, file: str, problem: str) -> None:
        self.file = file
        super().__init__(
            f"{file}: {problem}; nothing was touched. Check that the files it names are in "
            "place or in .trash/, then move it away and run `cryptorun artifacts scan`"
        )


class TrashError(ArtifactsError):
    """A trash folder cannot be restored or read as recorded."""


# Errors that are the disk's or the system's, not one file's: an apply that meets one
# stops (and is undone) rather than skipping a run or a file and exiting 0, since the next
# run or file would meet it too and the user must hear of it.
SYSTEM_ERRNOS = frozenset(
    {errno.EIO, errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EMFILE, errno.ENFILE}
)

# What a user can do about a refusal from the file system, by errno.
_FIXES = {
    errno.ENOSPC: "free some space on that file system, then rerun",
    errno.EDQUOT: "free some space (the disk quota is used up), then rerun",
    errno.EIO: "the disk reported an I/O error: check it (dmesg) before rerunning",
    errno.EACCES: "check the owner and mode of that path, or run as its owner",
    errno.EPERM: "check the owner and mode of that path, or run as its owner",
    errno.EROFS: "the file system is read-only: remount it read-write, then rerun",
    errno.EMFILE: "too many open files: raise the limit (`ulimit -n`), then rerun",
    errno.ENFILE: "the system is out of file handles: close some programs, then rerun",
    errno.EXDEV: "keep artifacts/.trash on the same file system as the tree",
}


def why(exc: BaseException) -> str:
    """An OSError as a user reads it: what the system said, and about which path."""
    if not isinstance(exc, OSError) or not exc.strerror:
        return str(exc)
    if exc.filename is None:
        return exc.strerror
    from ._fs import display_path

    return f"{exc.strerror}: {display_path(os.fsdecode(exc.filename))}"


def fix(exc: BaseException) -> str:
    """What to do about it, as the end of a sentence ("; free some space ..."), or ""."""
    hint = _FIXES.get(exc.errno) if isinstance(exc, OSError) and exc.errno else None
    return f"; {hint}" if hint else ""
