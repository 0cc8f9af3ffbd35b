"""The trash and the journal that makes every move into or out of it undoable.

Layout (DESIGN §5): `.trash/<trash-id>/` holds a trashed run's files at their paths
relative to the root (so `cp -r .trash/<id>/* artifacts/` puts them back by hand) and
`.record.json`: where they came from, when they were trashed, why, and their checksums.
The trash id is the run's id, or `<id>.2`, `<id>.3`, ... when that folder is taken.

Protocol of an apply (gc moving runs in, restore moving one out):

1. the journal `.journal.json` lists every move, written and fsynced before anything moves
   (state `moving`);
2. records, renames, reports; nothing is fsynced one by one;
3. one syncfs(2), then the journal is rewritten with state `committed`: the commit point;
4. the rest (removing emptied directories, a restored run's record) can be done again;
5. the manifest is refreshed, then the journal is removed.

A command that finds a journal (and holds the lock, so its writer is gone) calls `recover`:
before the commit point it rolls back (each file still as journaled goes back to where it
was; trash folders left without files are removed), after it it rolls forward. Both are
idempotent, so a second crash during recovery is recovered the same way.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

from . import _fs, errors
from .errors import ApplyError, JournalError, TrashError, UnsafeFileError, UsageError
from .manifest import Entry, FileRecord, iso, parse_iso
from .progress import NoProgress, Progress

TRASH_DIR = ".trash"
JOURNAL_NAME = ".journal.json"
RECORD_NAME = ".record.json"
PURGE_PREFIX = ".purge-"
REPORT_PREFIXES = ("gc_report_", "compact_report_")
ASIDE_SUFFIX = ".compacted"  # restore: the cleaned Markdown file, set aside until commit
JOURNAL_FORMAT = "artifacts_tasks.journal"
RECORD_FORMAT = "artifacts_tasks.trash_record"


def safe_rel(path: object, *, in_trash: bool = False) -> bool:
    """A relative POSIX path with no empty, `.` or `..` part (and no dot part outside the
    trash): the only kind of path the journal and the records may name."""
    if not isinstance(path, str) or not path or path.startswith("/") or "\0" in path:
        return False
    parts = path.split("/")
    if in_trash:
        if len(parts) < 3 or parts[0] != TRASH_DIR or not is_trash_id(parts[1]):
            return False
        parts = parts[2:]
    return all(p and p[0] != "." for p in parts)


def is_trash_id(name: str) -> bool:
    """`0123abcd` or `0123abcd.2`: what gc names trash folders (and nothing else)."""
    run_id, _, n = name.partition(".")
    return (
        8 <= len(run_id) <= 32
        and all(c in "0123456789abcdef" for c in run_id)
        and (not n or (n.isdigit() and n[0] != "0"))
    )


# ---- the journal -----------------------------------------------------------------------


class Move(NamedTuple):
    """One file moved by an apply: from `src` to `dst`, both relative to the root."""

    src: str
    dst: str
    size: int
    mtime_ns: int
    xxh3_128: str


class Replace(NamedTuple):
    """One file compaction rewrites: `temp` (beside it) replaces `path`; a Markdown
    original is first copied to the trash folder `trash_id` ("" for JSONL)."""

    path: str
    temp: str
    original_xxh3_128: str
    trash_id: str


COMPACT_TEMP_PREFIX = ".compact-"


def _is_temp_of(temp: str, path: str) -> bool:
    head = _fs.parent_and_name(path)[0]
    t_head, t_name = _fs.parent_and_name(temp)
    return t_head == head and t_name.startswith(COMPACT_TEMP_PREFIX) and "/" not in t_name


@dataclass
class Journal:
    operation: str  # "gc", "restore" or "compact"
    started_at: datetime
    moves: list[Move]
    trash_ids: list[str]  # gc: folders it creates; restore: the folder it empties
    prune: list[str] = field(default_factory=list)  # directories gc may leave empty
    reports: list[str] = field(default_factory=list)  # report file names in .trash/
    replaces: list[Replace] = field(default_factory=list)  # compact: the files it rewrites
    state: str = "moving"

    def to_json(self) -> dict[str, Any]:
        return {
            "format": JOURNAL_FORMAT,
            "version": 1,
            "operation": self.operation,
            "state": self.state,
            "started_at": iso(self.started_at),
            "pid": os.getpid(),
            "moves": [list(m) for m in self.moves],
            "trash_ids": self.trash_ids,
            "prune": self.prune,
            "reports": self.reports,
            "replaces": [list(r) for r in self.replaces],
        }

    @classmethod
    def from_bytes(cls, raw: bytes, shown: str) -> Journal:
        """A journal, checked so that following it can only touch the root's own files."""
        try:
            data = json.loads(raw)
            if data["format"] != JOURNAL_FORMAT or data["version"] != 1:
                raise JournalError(shown, "is not a journal this version wrote")
            op, state = data["operation"], data["state"]
            if op not in ("gc", "restore", "compact") or state not in ("moving", "committed"):
                raise JournalError(shown, f"unknown operation or state: {op!r}, {state!r}")
            moves = [
                Move(str(s), str(d), int(n), int(t), str(h)) for s, d, n, t, h in data["moves"]
            ]
            trash_ids = [str(t) for t in data["trash_ids"]]
            prune = [str(p) for p in data["prune"]]
            reports = [str(r) for r in data["reports"]]
            replaces = [
                Replace(str(p), str(t), str(h), str(i)) for p, t, h, i in data.get("replaces", [])
            ]
            started = parse_iso(data["started_at"])
        except JournalError:
            raise
        except (
            ValueError,
            TypeError,
            KeyError,
            IndexError,
            OverflowError,
            RecursionError,
        ) as exc:
            raise JournalError(shown, f"is truncated or malformed ({exc})") from None
        for m in moves:
            # One end in the trash, the other outside it: gc moves in, restore moves out
            # (and first sets a cleaned Markdown file aside into the trash).
            outside, inside = (m.src, m.dst) if safe_rel(m.src) else (m.dst, m.src)
            if not safe_rel(outside) or not safe_rel(inside, in_trash=True):
                raise JournalError(shown, f"names a path it may not touch: {m.src!r} -> {m.dst!r}")
        bad = [t for t in trash_ids if not is_trash_id(t)]
        bad += [p for p in prune if not safe_rel(p)]
        bad += [r for r in reports if not (r.startswith(REPORT_PREFIXES) and "/" not in r)]
        bad += [
            r.path
            for r in replaces
            if not safe_rel(r.path)
            or not _is_temp_of(r.temp, r.path)
            or (r.trash_id and not is_trash_id(r.trash_id))
        ]
        if bad:
            raise JournalError(shown, f"names a path it may not touch: {bad[0]!r}")
        return cls(op, started, moves, trash_ids, prune, reports, replaces, state)


def journal_path(root: Path) -> Path:
    return root / JOURNAL_NAME


def trash_dir(root: Path, *, strict: bool = True) -> Path | None:
    """`root/.trash` when it is a directory; None when absent. A symlink (or a file) there
    is never followed: `strict` refuses it, otherwise it counts as no trash at all."""
    path = root / TRASH_DIR
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISDIR(st.st_mode):
        return path
    if strict:
        raise UnsafeFileError(str(path), "is a symlink or not a directory")
    return None


def _open_trash(root: Path) -> int:
    """An fd of `.trash/` opened without following a symlink (raises when absent)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return _open_dir(TRASH_DIR, fd)
    finally:
        os.close(fd)


def has_journal(root: Path) -> bool:
    return os.path.lexists(journal_path(root))


def needs_recovery(root: Path) -> bool:
    """An apply's journal, or a purge's leftovers: what `recover` has to finish."""
    if has_journal(root):
        return True
    folder = trash_dir(root, strict=False)
    with contextlib.suppress(OSError):
        return folder is not None and any(n.startswith(PURGE_PREFIX) for n in os.listdir(folder))
    return False


def write_journal(root: Path, journal: Journal) -> None:
    """Write the journal durably (temp + fsync + rename + directory fsync)."""
    data = json.dumps(journal.to_json(), separators=(",", ":")).encode("utf-8", "surrogateescape")
    try:
        _fs.atomic_write(journal_path(root), data + b"\n")
    except OSError as exc:
        if journal.state == "moving":
            raise ApplyError(
                f"cannot write the journal ({errors.why(exc)}); nothing was moved" + errors.fix(exc)
            ) from None
        raise


def remove_journal(root: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(journal_path(root))
    _fs.fsync_dir(root)


def commit(root: Path, journal: Journal) -> None:
    """Make every move durable, then mark the journal committed: from here on, forward."""
    sync(root)
    journal.state = "committed"
    write_journal(root, journal)
    _fs.failpoint("committed")


def read_journal(root: Path) -> Journal | None:
    path = journal_path(root)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode):
        raise JournalError(str(path), "is not a regular file")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise JournalError(str(path), f"cannot be read ({exc.strerror})") from None
    return Journal.from_bytes(raw, str(path))


def recover(root: Path) -> list[str]:
    """Finish or roll back an interrupted apply (the caller holds the lock).

    Returns what was done, for the user, or [] when there was nothing to recover. The
    journal stays until `remove_journal`, which the caller runs once the manifest agrees.
    """
    notes = _finish_purges(root)
    _fs.remove_stale_temps(root / TRASH_DIR)  # a report or record half written
    journal = read_journal(root)
    if journal is None:
        return notes
    names = {"gc": "gc --apply", "restore": "restore", "compact": "compact --apply"}
    what = f"{names[journal.operation]} of {iso(journal.started_at)}"
    if journal.operation == "compact":
        kept = settle_compaction(root, journal)
        return [
            *notes,
            f"settled the interrupted {what}: {kept} file(s) compacted, the others as they were",
        ]
    if journal.state == "committed":
        roll_forward(root, journal)
        return [*notes, f"finished the interrupted {what} (every move had been made)"]
    back, left = rollback(root, journal)
    note = f"rolled back the interrupted {what}: {back} file(s) moved back"
    if left:
        where = "in the trash with their record" if journal.operation == "gc" else "in place"
        note += (
            f"; {len(left)} left {where}, as their old place is taken or they changed "
            f"(first: {_fs.display_path(left[0])})"
        )
    return [*notes, note]


def rollback(root: Path, journal: Journal) -> tuple[int, list[str]]:
    """Undo the moves of an uncommitted journal; returns (files moved back, files left).

    A file goes back only when its place is free and it is the file that moved (same
    size and mtime, as a rename keeps them, or else the journaled checksum: a copied tree
    has new mtimes). A file whose place is taken, or not ours any more, stays where it is.
    """
    moved_back = 0
    left: list[str] = []
    if journal.operation == "compact":
        settle_compaction(root, journal)
        return 0, left
    for m in reversed(journal.moves):
        at_dst = _stat_or_unsafe(root, m.dst)
        if at_dst is None:
            continue  # never moved (or already moved back)
        try:
            at_src = _fs.lstat_under(root, m.src)
        except OSError:
            left.append(m.dst)  # a directory on its way back is now a symlink or a file
            continue
        if at_src is not None:
            if (at_src.st_ino, at_src.st_dev) == (at_dst.st_ino, at_dst.st_dev):
                _unlink(root, m.dst)  # a link-then-unlink move cut in the middle
                moved_back += 1
            else:
                left.append(m.dst)  # its place is taken
            continue
        if not _is_journaled(root, at_dst, m):
            left.append(m.dst)
            continue
        try:
            _rename(root, m.dst, m.src)
        except OSError:
            left.append(m.dst)
            continue
        moved_back += 1
        _fs.failpoint("rollback_moved")
    folder = trash_dir(root, strict=False)
    if journal.operation == "gc" and folder is not None:
        for name in journal.reports:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(folder / name)
        for trash_id in journal.trash_ids:
            _remove_if_only_record(folder / trash_id)
    sync(root)
    return moved_back, left


def abort(root: Path, journal: Journal, refresh: Callable[[], object]) -> None:
    """Undo an apply that failed before its commit point (the caller re-raises)."""
    try:
        rollback(root, journal)
    except Exception as exc:
        raise ApplyError(
            f"an apply failed and undoing it failed too ({errors.why(exc)}); its journal "
            f"{journal_path(root)} stays, and the next command finishes the undo{errors.fix(exc)}"
        ) from exc
    try:
        refresh()
    except Exception as exc:
        raise ApplyError(
            f"an apply failed; every file it had moved is back in place, but the manifest "
            f"could not be rewritten ({errors.why(exc)}); the next command finishes that"
        ) from exc
    remove_journal(root)


def sync(root: Path) -> None:
    """syncfs(2) of the root's file system and the trash's, should it be another."""
    _fs.sync_filesystem(root)
    folder = trash_dir(root, strict=False)
    if folder is not None and os.lstat(folder).st_dev != os.lstat(root).st_dev:
        _fs.sync_filesystem(folder)


def settle_compaction(root: Path, journal: Journal) -> int:
    """Each file compaction touched ends whole: its temp removed; a file still holding its
    original bytes loses the trash copy made for it; a compacted (or since edited) one keeps
    it. Returns how many files are compacted."""
    compacted = 0
    folder = trash_dir(root, strict=False)
    for r in journal.replaces:
        head, temp = _fs.parent_and_name(r.temp)
        try:
            fd = _fs.open_dir_under(root, head)
        except OSError:
            continue  # the directory is gone or not ours any more: nothing of ours there
        try:
            with contextlib.suppress(OSError):  # gone, or never made (a name too long)
                os.unlink(temp, dir_fd=fd)
        finally:
            os.close(fd)
        try:
            original = _xxh3(root, r.path) == r.original_xxh3_128
        except OSError:
            original = False
        if original:
            if r.trash_id and folder is not None:
                remove_copy(folder / r.trash_id, r.path)
        else:
            compacted += 1
    return compacted


def remove_copy(folder: Path, rel: str) -> None:
    """Remove a trash folder that holds only the record and the copy of `rel`."""
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        os.unlink(folder / rel)
    _remove_if_only_record(folder)


def roll_forward(root: Path, journal: Journal) -> None:
    """The steps after the commit point, each harmless to repeat."""
    if journal.operation == "compact":
        settle_compaction(root, journal)
    elif journal.operation == "gc":
        prune_empty_dirs(root, journal.prune)
    elif (folder := trash_dir(root, strict=False)) is not None:
        for m in journal.moves:  # a cleaned file set aside: the original is back
            if safe_rel(m.src) and m.dst.endswith(ASIDE_SUFFIX):
                with contextlib.suppress(FileNotFoundError):
                    _unlink(root, m.dst)
        for trash_id in journal.trash_ids:
            _remove_if_only_record(folder / trash_id)
    _fs.failpoint("rolled_forward")


def _stat_or_unsafe(root: Path, rel: str) -> os.stat_result | None:
    try:
        return _fs.lstat_under(root, rel)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            return None  # a directory on the way is now a symlink or a file: not ours
        raise


def _is_journaled(root: Path, st: os.stat_result, m: Move) -> bool:
    """The file at `m.dst` is the one that moved."""
    if not stat.S_ISREG(st.st_mode) or st.st_size != m.size:
        return False
    if st.st_mtime_ns == m.mtime_ns:
        return True
    try:
        return _xxh3(root, m.dst) == m.xxh3_128
    except OSError:
        return False


def _unlink(root: Path, rel: str) -> None:
    head, name = _fs.parent_and_name(rel)
    fd = _fs.open_dir_under(root, head)
    try:
        os.unlink(name, dir_fd=fd)
    finally:
        os.close(fd)


def _rename(root: Path, src: str, dst: str) -> None:
    """Rename `root/src` to `root/dst`, creating `dst`'s directories, following no symlink."""
    src_dir, src_name = _fs.parent_and_name(src)
    dst_dir, dst_name = _fs.parent_and_name(dst)
    sfd = _fs.open_dir_under(root, src_dir)
    try:
        dfd = _fs.makedirs_under(root, dst_dir)
        try:
            _fs.rename_noreplace(src_name, dst_name, src_dir_fd=sfd, dst_dir_fd=dfd)
        finally:
            os.close(dfd)
    finally:
        os.close(sfd)


def _remove_if_only_record(folder: Path) -> bool:
    """Remove a trash folder that holds nothing but its record and directories."""
    try:
        st = os.lstat(folder)
    except FileNotFoundError:
        return True
    if not stat.S_ISDIR(st.st_mode):
        return False
    for dirpath, dirnames, filenames in os.walk(folder):
        files = [f for f in filenames if not (f == RECORD_NAME and dirpath == str(folder))]
        links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        if files or links:
            return False
    with contextlib.suppress(FileNotFoundError):
        os.unlink(folder / RECORD_NAME)
    for dirpath, _dirs, _files in sorted(os.walk(folder, topdown=False), key=lambda w: -len(w[0])):
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(dirpath)
    return True


def prune_empty_dirs(root: Path, dirs: Sequence[str]) -> None:
    """Remove each directory (and then its parents) that is now empty, never the root."""
    for rel in sorted(set(dirs), key=lambda d: -d.count("/")):
        while rel:
            head, name = _fs.parent_and_name(rel)
            try:
                fd = _fs.open_dir_under(root, head)
            except OSError:
                break
            try:
                os.rmdir(name, dir_fd=fd)
            except OSError:
                break  # not empty (or gone, or not ours): stop climbing
            finally:
                os.close(fd)
            rel = head


# ---- moving runs into the trash (used by gc) ---------------------------------------------


def trash_root(root: Path) -> int:
    """An fd of `.trash/`, created when missing; a symlink there is refused."""
    try:
        return _fs.makedirs_under(root, TRASH_DIR)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafeFileError(str(root / TRASH_DIR), "is not a directory") from None
        raise TrashError(
            f"{root / TRASH_DIR} cannot be made or opened ({errors.why(exc)}){errors.fix(exc)}"
        ) from None


def new_trash_ids(root: Path, run_ids: Sequence[str]) -> list[str]:
    """A free folder name per run: its id, else `<id>.2`, `<id>.3`, ..."""
    folder = trash_dir(root)
    taken = set(os.listdir(folder)) if folder is not None else set()
    chosen = []
    for run_id in run_ids:
        name, n = run_id, 1
        while name in taken:
            n += 1
            name = f"{run_id}.{n}"
        taken.add(name)
        chosen.append(name)
    return chosen


def record_of(
    entry: Entry,
    files: Sequence[FileRecord],
    *,
    now: datetime,
    operation: str,
    reasons: Sequence[str],
    **extra: Any,
) -> dict[str, Any]:
    """A trash folder's record (trash_record.schema.json): where `files` of `entry` came
    from, when and why they were trashed, and their checksums."""
    return {
        "format": RECORD_FORMAT,
        "version": 1,
        "id": entry.id,
        "family": entry.family,
        "directory": entry.directory,
        "run_key": entry.run_key,
        "timestamp": iso(entry.timestamp),
        "status": entry.status,
        "trashed_at": iso(now),
        "operation": operation,
        **extra,
        "reasons": list(reasons),
        "size": sum(f.size for f in files),
        "file_count": len(files),
        "files": [
            {"path": f.path, "size": f.size, "mtime_ns": f.mtime_ns, "xxh3_128": f.xxh3_128}
            for f in files
        ],
    }


def report_names(root: Path, prefix: str, now: datetime) -> tuple[str, str]:
    """Free names for an operation's reports: `<prefix>YYYYMMDD_HHMMSS.md` and `.json`
    (`_2`, `_3`, ... when two land in the same second)."""
    stem = f"{prefix}{now.strftime('%Y%m%d_%H%M%S')}"
    taken = set(reports(root))
    name, n = stem, 1
    while f"{name}.md" in taken or f"{name}.json" in taken:
        n += 1
        name = f"{stem}_{n}"
    return f"{name}.md", f"{name}.json"


def trash_path(trash_id: str, rel: str) -> str:
    return f"{TRASH_DIR}/{trash_id}/{rel}"


class Mover:
    """Puts runs into the trash for one apply, keeping the directories it uses open.

    Each run gets a new folder (its name was chosen free), so its directories are made
    without probing; the source directory stays open while consecutive runs share it.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.trash_fd = trash_root(root)
        self._src: tuple[str, int] | None = None
        self.current = ""  # the file being moved, for error messages

    def put(
        self, trash_id: str, record: dict[str, Any], moves: Sequence[Move], inodes: Sequence[int]
    ) -> str:
        """Make the folder, write its record (before any file moves in), move the files.

        Each file is checked once moved: the same inode, size and mtime as scanned (a file
        replaced or rewritten after the plan's check is not the one planned). Otherwise the
        run's files go back, its folder is removed, and the reason is returned ("" = done).
        """
        self.current = f"{TRASH_DIR}/{trash_id}"  # until a file moves, the folder is at stake
        os.mkdir(trash_id, 0o755, dir_fd=self.trash_fd)
        made = {"": _open_dir(trash_id, self.trash_fd)}
        done: list[tuple[Move, int, str]] = []
        try:
            data = json.dumps(record).encode("utf-8", "surrogateescape") + b"\n"
            fd = os.open(RECORD_NAME, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=made[""])
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            _fs.failpoint("record_written")
            cut = len(TRASH_DIR) + len(trash_id) + 2
            for m, inode in zip(moves, inodes, strict=True):
                head, name = _fs.parent_and_name(m.dst[cut:])
                dst_fd = made.get(head)
                if dst_fd is None:
                    dst_fd = self._make_dirs(made, head)
                src_dir, src_name = _fs.parent_and_name(m.src)
                self.current = m.src
                os.rename(src_name, name, src_dir_fd=self._src_fd(src_dir), dst_dir_fd=dst_fd)
                done.append((m, dst_fd, name))
                _fs.failpoint("moved")
                st = os.stat(name, dir_fd=dst_fd, follow_symlinks=False)
                if (st.st_ino, st.st_size, st.st_mtime_ns) != (inode, m.size, m.mtime_ns):
                    self._put_back(done)
                    _remove_if_only_record(self.root / TRASH_DIR / trash_id)
                    return f"{m.src} changed while gc was moving its run"
            return ""
        finally:
            for fd in made.values():
                os.close(fd)

    def _put_back(self, done: list[tuple[Move, int, str]]) -> None:
        for m, dst_fd, name in reversed(done):
            src_dir, src_name = _fs.parent_and_name(m.src)
            with contextlib.suppress(FileExistsError):  # taken meanwhile: stays, recorded
                _fs.rename_noreplace(
                    name, src_name, src_dir_fd=dst_fd, dst_dir_fd=self._src_fd(src_dir)
                )

    def _make_dirs(self, made: dict[str, int], rel: str) -> int:
        parent = made[""]
        done = ""
        for part in rel.split("/"):
            done = f"{done}/{part}" if done else part
            fd = made.get(done)
            if fd is None:
                os.mkdir(part, 0o755, dir_fd=parent)
                fd = made[done] = _open_dir(part, parent)
            parent = fd
        return parent

    def _src_fd(self, rel_dir: str) -> int:
        if self._src is None or self._src[0] != rel_dir:
            self.close()
            self._src = (rel_dir, _fs.open_dir_under(self.root, rel_dir))
        return self._src[1]

    def close(self) -> None:
        if self._src is not None:
            os.close(self._src[1])
            self._src = None

    def __enter__(self) -> Mover:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
        os.close(self.trash_fd)


def _open_dir(name: str, dir_fd: int) -> int:
    return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)


def write_copy(
    root: Path, trash_id: str, record: dict[str, Any], rel: str, data: bytes, st: os.stat_result
) -> None:
    """A trash folder holding a copy of one file (compaction keeps the original this way,
    as the file itself is replaced in place), made durable before the file changes."""
    head = _fs.parent_and_name(rel)[0]
    name = _fs.parent_and_name(rel)[1]
    tfd = trash_root(root)
    try:
        os.mkdir(trash_id, 0o755, dir_fd=tfd)
        folder = _open_dir(trash_id, tfd)
        os.fsync(tfd)  # the folder's name, durable before the file it keeps changes
    finally:
        os.close(tfd)
    try:
        fd = os.open(RECORD_NAME, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=folder)
        with os.fdopen(fd, "wb") as f:
            f.write(json.dumps(record).encode("utf-8", "surrogateescape") + b"\n")
            os.fsync(f.fileno())
        inside = f"{TRASH_DIR}/{trash_id}/{head}" if head else f"{TRASH_DIR}/{trash_id}"
        dfd = _fs.open_dir_under(root, inside, create=True)
        try:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=dfd)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.utime(f.fileno(), ns=(st.st_atime_ns, st.st_mtime_ns))
                os.fsync(f.fileno())
            os.fsync(dfd)
        finally:
            os.close(dfd)
        os.fsync(folder)
    finally:
        os.close(folder)


def move_all(
    root: Path,
    moves: Sequence[Move],
    *,
    progress: Progress | None = None,
) -> None:
    """Rename each file to its place (never over an existing file), opening each directory
    pair once."""
    fds: dict[tuple[str, str], tuple[int, int]] = {}
    try:
        for m in moves:
            src_dir, src_name = _fs.parent_and_name(m.src)
            dst_dir, dst_name = _fs.parent_and_name(m.dst)
            pair = fds.get((src_dir, dst_dir))
            if pair is None:
                sfd = _fs.open_dir_under(root, src_dir)
                try:
                    dfd = _fs.makedirs_under(root, dst_dir)
                except BaseException:
                    os.close(sfd)
                    raise
                pair = fds[(src_dir, dst_dir)] = (sfd, dfd)
            try:
                _fs.rename_noreplace(src_name, dst_name, src_dir_fd=pair[0], dst_dir_fd=pair[1])
            except FileExistsError:
                raise FileExistsError(errno.EEXIST, "File exists", m.src, None, m.dst) from None
            if progress is not None:
                progress.advance(1, m.size)
            _fs.failpoint("moved")
    finally:
        for sfd, dfd in fds.values():
            os.close(sfd)
            os.close(dfd)


# ---- reading the trash -------------------------------------------------------------------


@dataclass(frozen=True)
class TrashItem:
    """One trash folder: its record, or why it has none we can use."""

    trash_id: str
    record: dict[str, Any] | None
    problem: str = ""
    size: int = 0

    @property
    def trashed_at(self) -> datetime | None:
        return parse_iso(self.record["trashed_at"]) if self.record else None

    @property
    def run_id(self) -> str:
        return str(self.record["id"]) if self.record else self.trash_id.partition(".")[0]


def read_record(root: Path, trash_id: str) -> dict[str, Any]:
    """A folder's record, checked against its schema and for paths it may name."""
    from .config import schema_error

    path = root / TRASH_DIR / trash_id / RECORD_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise TrashError(f"{path} is not a regular file")
            data = json.loads(f.read(1 << 30))
    except FileNotFoundError:
        raise TrashError(f"{path} is missing") from None
    except OSError as exc:
        raise TrashError(f"{path} cannot be read ({exc.strerror})") from None
    except (ValueError, RecursionError):
        raise TrashError(f"{path} is not valid JSON (truncated?)") from None
    found = schema_error("trash_record.schema.json", data)
    if found is not None:
        key, problem = found
        raise TrashError(f"{path} fails its schema at {key or 'the top level'}: {problem}")
    bad = [f["path"] for f in data["files"] if not safe_rel(f["path"])]
    if bad:
        raise TrashError(f"{path} names a path outside the root: {bad[0]!r}")
    try:
        parse_iso(data["timestamp"]) + timedelta(days=1)
        parse_iso(data["trashed_at"]) + timedelta(days=36600)  # `trash list` adds retention
    except (ValueError, OverflowError):
        raise TrashError(f"{path} holds a date that does not exist") from None
    return dict(data)


def items(root: Path) -> list[TrashItem]:
    """Every trash folder, oldest trashed first (folders without a usable record last)."""
    folder = trash_dir(root)
    if folder is None:
        return []
    try:
        names = os.listdir(folder)
    except OSError as exc:
        raise TrashError(f"{folder} cannot be read ({errors.why(exc)})") from None
    found = []
    for name in names:
        if name.startswith(".") or not os.path.isdir(root / TRASH_DIR / name):
            continue
        if os.path.islink(root / TRASH_DIR / name):
            continue
        size = _tree_size(root / TRASH_DIR / name)
        try:
            found.append(TrashItem(name, read_record(root, name), size=size))
        except TrashError as exc:
            found.append(TrashItem(name, None, str(exc), size))
    return sorted(
        found, key=lambda t: (t.record is None, t.record and t.record["trashed_at"], t.trash_id)
    )


def _tree_size(folder: Path) -> int:
    """Bytes of the trashed files (not the record)."""
    total = 0
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            if name == RECORD_NAME and dirpath == str(folder):
                continue
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def reports(root: Path) -> list[str]:
    folder = trash_dir(root, strict=False)
    if folder is None:
        return []
    return sorted(n for n in os.listdir(folder) if n.startswith(REPORT_PREFIXES))


# ---- purging -----------------------------------------------------------------------------


def expired(root: Path, cutoff: datetime) -> list[TrashItem]:
    """Trash folders trashed at or before `cutoff`, by their records (never by mtimes)."""
    return [t for t in items(root) if t.trashed_at is not None and t.trashed_at <= cutoff]


def purge(root: Path, doomed: Sequence[TrashItem], progress: Progress | None = None) -> None:
    """Delete trash folders for good: each is first renamed out of sight (atomic), then
    removed, so a crash leaves it whole or already gone from `trash list`."""
    if not doomed:
        return
    fd = _open_trash(root)
    current = ""
    hidden = False
    bar = progress or NoProgress()
    bar.start(len(doomed), sum(t.size for t in doomed))
    try:
        for item in doomed:
            current, hidden = item.trash_id, False
            os.rename(item.trash_id, f"{PURGE_PREFIX}{item.trash_id}", src_dir_fd=fd, dst_dir_fd=fd)
            hidden = True
            _fs.failpoint("purge_renamed")
            shutil.rmtree(f"{PURGE_PREFIX}{item.trash_id}", dir_fd=fd)
            bar.advance(1, item.size)
        current = ""
        os.fsync(fd)
        bar.close()
    except OSError as exc:
        bar.close()
        if not current:
            state = "every folder is purged"
        elif hidden:
            state = f"{current} is out of `trash list` already, and is removed then"
        else:
            state = f"{current} and the folders after it are still in the trash, whole"
        raise TrashError(
            f"purging {root / TRASH_DIR} stopped ({errors.why(exc)}){errors.fix(exc)}; run "
            f"`cryptorun artifacts trash purge` again once that is fixed ({state})"
        ) from None
    finally:
        os.close(fd)


def _finish_purges(root: Path) -> list[str]:
    """Remove what an interrupted purge had already renamed out of sight."""
    if not needs_recovery(root) or trash_dir(root, strict=False) is None:
        return []
    left: list[str] = []
    try:
        fd = _open_trash(root)
        try:
            left = [n for n in os.listdir(fd) if n.startswith(PURGE_PREFIX)]
            for name in left:
                if stat.S_ISDIR(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
                    shutil.rmtree(name, dir_fd=fd)
                else:
                    os.unlink(name, dir_fd=fd)
        finally:
            os.close(fd)
    except OSError as exc:
        # Purged data that cannot be removed blocks nothing else: say so, carry on.
        return [f"could not finish an interrupted purge in {root / TRASH_DIR} ({errors.why(exc)})"]
    return [f"finished an interrupted purge of {len(left)} trash folder(s)"] if left else []


# ---- restoring ---------------------------------------------------------------------------


def find(root: Path, wanted: str) -> TrashItem:
    """The trash folder named `wanted`, or the only one holding the run with that id."""
    found = items(root)
    matches = [
        t
        for t in found
        if t.trash_id == wanted or ("." not in wanted and t.record and t.record["id"] == wanted)
    ]
    if not matches:
        names = sorted({t.trash_id for t in found} | {t.run_id for t in found})
        close = [n for n in names if wanted and n.startswith(wanted)][:5]
        hint = (
            f"; did you mean {', '.join(close)}?"
            if close
            else "; see `cryptorun artifacts trash list`"
        )
        raise UsageError(f"nothing in the trash with id {wanted!r}{hint}")
    if len(matches) > 1:
        listed = ", ".join(t.trash_id for t in matches)
        raise UsageError(f"run {wanted} was trashed more than once; restore one of: {listed}")
    return matches[0]


def restore(
    root: Path,
    item: TrashItem,
    *,
    now: datetime,
    refresh: Callable[[], object],
    progress: Progress | None = None,
) -> None:
    """Move a trashed run back where it was (the caller holds the lock).

    Every file is checked against its recorded checksum first, and nothing is overwritten:
    when any place is taken, nothing moves. The one exception undoes a compaction: the
    cleaned file its record names (by checksum) gives way to the original: it is first
    moved aside into the trash folder (`<path>.compacted`, journaled like every move), so
    a crash at any point leaves one of the two in place, and the commit removes it.
    """
    if item.record is None:
        raise TrashError(f"cannot restore {item.trash_id}: {item.problem}")
    moves = []
    aside = []
    taken = []
    compacted = item.record.get("compacted_xxh3_128")
    for f in item.record["files"]:
        src = trash_path(item.trash_id, f["path"])
        st = _stat_or_unsafe(root, src)
        if st is None or not stat.S_ISREG(st.st_mode):
            raise TrashError(f"{src} is missing from the trash; nothing was restored")
        if st.st_size != f["size"] or _xxh3(root, src) != f["xxh3_128"]:
            raise TrashError(f"{src} differs from its recorded checksum; nothing was restored")
        try:
            there = _fs.lstat_under(root, f["path"])
            if there is not None and compacted and _xxh3(root, f["path"]) == compacted:
                aside.append(
                    Move(
                        f["path"],
                        trash_path(item.trash_id, f["path"] + ASIDE_SUFFIX),
                        there.st_size,
                        there.st_mtime_ns,
                        compacted,
                    )
                )
            elif there is not None:
                taken.append(f["path"])
        except OSError:
            taken.append(f"{f['path']} (a directory on the way is not a directory)")
        moves.append(Move(src, f["path"], st.st_size, st.st_mtime_ns, f["xxh3_128"]))
    if taken:
        more = f" and {len(taken) - 1} more" if len(taken) > 1 else ""
        raise TrashError(
            f"refusing to overwrite {_fs.display_path(taken[0])}{more}: move it away and "
            f"retry (nothing was restored)"
        )
    moves = aside + moves  # the cleaned file out of the way first
    journal = Journal("restore", now, moves, [item.trash_id])
    write_journal(root, journal)
    _fs.failpoint("journal_written")
    try:
        bar = progress or NoProgress()
        bar.start(len(moves), sum(m.size for m in moves))
        with contextlib.closing(bar):
            move_all(root, moves, progress=bar)
        commit(root, journal)
    except BaseException as exc:
        abort(root, journal, refresh)
        if isinstance(exc, FileExistsError):
            raise TrashError(
                f"refusing to overwrite {_fs.display_path(exc.filename2 or exc.filename)}, "
                "which appeared during the restore; every file is back in the trash"
            ) from None
        if isinstance(exc, OSError):
            raise ApplyError(
                f"restore failed ({errors.why(exc)}); every file is back in the trash"
                + errors.fix(exc)
            ) from exc
        raise
    roll_forward(root, journal)
    try:
        refresh()
    except OSError as exc:
        raise ApplyError(
            "the run is restored, but the manifest could not be rewritten "
            f"({errors.why(exc)}); the next command finishes that{errors.fix(exc)}"
        ) from exc
    _fs.failpoint("manifest_saved")
    remove_journal(root)


def _xxh3(root: Path, rel: str) -> str:
    import xxhash

    head, name = _fs.parent_and_name(rel)
    dfd = _fs.open_dir_under(root, head)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dfd)
    finally:
        os.close(dfd)
    h = xxhash.xxh3_128()
    with os.fdopen(fd, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return str(h.hexdigest())
