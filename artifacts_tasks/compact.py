"""Compaction: big JSONL files through the lossless codec, Markdown cleaned up.

`plan` says, per file, what compaction would do (the expected size, or why the file is
left alone); `apply` does it under the lock and a journal:

* JSONL: the compacted form is written to a temp file beside the original, fsynced,
  decoded again and compared (size and xxh3) with the original, given the original's mode
  and mtime (a run dated by mtime keeps its date), and renamed over it. A crash leaves the
  original or a verified compacted file; `cat` and `read_original` give the bytes back.
* Markdown: the original is first copied into the trash with a record (so `restore` puts
  it back), then the cleaned text replaces it the same way.

The journal lists each file with its temp name and original checksum; recovery removes
temps and, for a file still holding its original bytes, the trash copy made for it.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

import xxhash

from . import _fs, errors, jsonl_codec, trash
from .config import Config
from .errors import ApplyError
from .families import content_status
from .manifest import Entry, FileRecord, Manifest, iso, shown_time
from .progress import NoProgress, Progress
from .text import human_size, md_cell, plural

JSONL, MARKDOWN = "jsonl", "markdown"
MD_CODEC = "markdown-cleanup"


def kind_of(path: str) -> str | None:
    lower = path.lower()
    if lower.endswith(".jsonl"):
        return JSONL
    if lower.endswith(".md"):
        return MARKDOWN
    return None


# ---- reading (compacted or not) ----------------------------------------------------------


def read_original(path: str | os.PathLike[str]) -> Iterator[bytes]:
    """The original bytes of an artifact, in chunks, whether it is compacted or not.

    A compacted JSONL file is decoded (and checked against its recorded checksum); any
    other file is read as it is.
    """
    with open(path, "rb") as f:
        if jsonl_codec.compacted_header(f.fileno(), os.fstat(f.fileno()).st_size):
            yield from jsonl_codec.decode_verified(f)
            return
        while chunk := f.read(1 << 20):
            yield chunk


def read_lines(path: str | os.PathLike[str]) -> Iterator[bytes]:
    """The original lines (without their newline) of a JSONL artifact, compacted or not."""
    pending = b""
    for chunk in read_original(path):
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop()
        yield from lines
    if pending:
        yield pending


def read_records(path: str | os.PathLike[str]) -> Iterator[Any]:
    """The JSON records of a JSONL artifact, compacted or not (blank lines skipped; a
    malformed line raises ValueError naming its line number)."""
    for number, line in enumerate(read_lines(path), 1):
        if line.strip():
            try:
                yield json.loads(line)
            except ValueError as exc:
                raise ValueError(f"{path}: line {number}: {exc}") from None


# ---- planning ----------------------------------------------------------------------------


@dataclass
class FilePlan:
    """What compaction would do to one file."""

    entry: Entry
    record: FileRecord
    kind: str
    expected: int | None = None  # size after compaction; None when skipped
    skip: str = ""  # why the file is left alone ("" = it is compacted)
    removed: list[dict[str, Any]] = field(default_factory=list)  # Markdown headings removed
    canonicalised: int = 0  # Markdown headings rewritten as ATX
    new_bytes: bytes | None = None  # Markdown: the cleaned file

    @property
    def path(self) -> str:
        return self.record.path

    @property
    def size(self) -> int:
        return self.record.size

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "path": self.path,
            "id": self.entry.id,
            "family": self.entry.family,
            "kind": self.kind,
            "size": self.size,
            "expected_size": self.expected,
            "skipped": self.skip or None,
        }
        if self.kind == MARKDOWN:
            doc["removed_headings"] = self.removed
            doc["canonicalised_headings"] = self.canonicalised
        return doc


def plan(
    root: Path,
    manifest: Manifest,
    config: Config,
    *,
    family: str | None = None,
    estimate: bool = True,
) -> list[FilePlan]:
    """Every JSONL and Markdown artifact of the chosen families, with its verdict.

    JSONL sizes are exact: the file is encoded (to nowhere) as `apply` would encode it;
    `estimate=False` skips that (apply encodes anyway, and says what it saved).
    """
    plans = []
    for entry in manifest.entries:
        if family is not None and entry.family != family:
            continue
        for record in entry.files:
            kind = kind_of(record.path)
            if kind is None:
                continue
            p = FilePlan(entry, record, kind)
            plans.append(p)
            p.skip = _why_not(p, config)
            if p.skip:
                continue
            try:
                if kind == JSONL and estimate:
                    _plan_jsonl(root, p, config)
                elif kind == JSONL:
                    pass
                else:
                    _plan_markdown(root, p, config)
            except (OSError, jsonl_codec.CodecError) as exc:
                p.skip = f"cannot be read ({getattr(exc, 'strerror', None) or exc})"
    return plans


def _why_not(p: FilePlan, config: Config) -> str:
    options = config.jsonl if p.kind == JSONL else config.markdown
    key = f"compaction.{p.kind}"
    if p.record.compaction is not None:
        return "already compacted"
    if not options.enabled:
        return f"{key}.enabled is false"
    if p.size < options.min_size_kb * 1024:
        return f"under {key}.min_size_kb ({options.min_size_kb} KB)"
    if p.kind == MARKDOWN and not (
        config.markdown.remove_empty_sections or config.markdown.canonical_headers
    ):
        return "both Markdown options are off"
    return ""


class _Counter(io.RawIOBase):
    """A sink that only counts what is written to it."""

    def __init__(self) -> None:
        self.n = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.n += len(b)
        return len(b)


def _plan_jsonl(root: Path, p: FilePlan, config: Config) -> None:
    sink = _Counter()
    with _open_under(root, p.path) as f:
        if jsonl_codec.compacted_header(f.fileno(), os.fstat(f.fileno()).st_size):
            p.skip = "already compacted"
            return
        _encode(f, sink, p, config)  # type: ignore[arg-type]
    if sink.n >= p.size:
        p.skip = f"would not shrink ({human_size(sink.n)} compacted)"
    else:
        p.expected = sink.n


def _encode(src: BinaryIO, dst: BinaryIO, p: FilePlan, config: Config) -> None:
    jsonl_codec.encode(
        src,
        dst,
        original_size=p.size,
        original_xxh3_128=p.record.xxh3_128,
        level=config.jsonl.zstd_level,
        dict_threshold=config.jsonl.dict_threshold,
        status=p.record.status,
    )


def _plan_markdown(root: Path, p: FilePlan, config: Config) -> None:
    from .markdown_compact import compact_markdown

    with _open_under(root, p.path) as f:
        original = f.read()
    text = original.decode("utf-8", "surrogateescape")
    result = compact_markdown(
        text,
        remove_empty_sections=config.markdown.remove_empty_sections,
        canonical_headers=config.markdown.canonical_headers,
    )
    if result.refused:
        p.skip = f"left alone: {result.refused}"
        return
    if not result.changed:
        p.skip = "nothing to change"
        return
    new = result.text.encode("utf-8", "surrogateescape")
    name = p.path.rpartition("/")[2]
    before, after = content_status(name, original), content_status(name, new)
    if before != after:  # a removed `## FAIL` heading must not make a failed run pass
        p.skip = f"left alone: its status would change from {before} to {after}"
        return
    p.new_bytes = new
    p.expected = len(p.new_bytes)
    p.removed = [{"line": h.line, "level": h.level, "text": h.text} for h in result.removed]
    p.canonicalised = len(result.canonicalised)


@contextlib.contextmanager
def _open_under(root: Path, rel: str) -> Iterator[BinaryIO]:
    """Open an artifact for reading without following a symlink anywhere under the root."""
    head, name = _fs.parent_and_name(rel)
    dfd = _fs.open_dir_under(root, head)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
    finally:
        os.close(dfd)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise OSError(0, "not a regular file", rel)
        yield f


# ---- applying ----------------------------------------------------------------------------


@dataclass
class Applied:
    done: list[FilePlan]
    skipped: list[FilePlan]  # planned, then found changed or refused at apply time
    reports: list[str]


def temp_name(rel: str) -> str:
    """A short temp name beside the file (a long name plus a suffix can pass NAME_MAX)."""
    head, name = _fs.parent_and_name(rel)
    digest = xxhash.xxh3_64_hexdigest(name.encode("utf-8", "surrogateescape"))
    tmp = f"{trash.COMPACT_TEMP_PREFIX}{digest}.tmp-{os.getpid()}"
    return f"{head}/{tmp}" if head else tmp


def apply(
    root: Path,
    plans: list[FilePlan],
    config: Config,
    *,
    now: datetime,
    refresh: Callable[[], object],
    progress: Progress | None = None,
) -> Applied:
    """Compact the planned files (the caller holds the lock and refreshed the manifest)."""
    todo = [p for p in plans if not p.skip]
    if not todo:
        return Applied([], [], [])
    md = [p for p in todo if p.kind == MARKDOWN]
    trash_ids = dict(
        zip(
            (p.path for p in md),
            trash.new_trash_ids(root, [p.entry.id for p in md]) if md else [],
            strict=True,
        )
    )
    report_md, report_json = trash.report_names(root, "compact_report_", now)
    journal = trash.Journal(
        "compact",
        now,
        [],
        sorted(trash_ids.values()),
        reports=[report_md, report_json],
        replaces=[
            trash.Replace(p.path, temp_name(p.path), p.record.xxh3_128, trash_ids.get(p.path, ""))
            for p in todo
        ],
    )
    trash.write_journal(root, journal)
    _fs.failpoint("journal_written")
    done: list[FilePlan] = []
    skipped: list[FilePlan] = []
    bar = progress or NoProgress()
    bar.start(len(todo), sum(p.size for p in todo))
    try:
        for p in todo:
            why = _apply_one(root, p, config, trash_ids.get(p.path, ""), now)
            if why:
                p.skip = why
                skipped.append(p)
            else:
                done.append(p)
            bar.advance(1, p.size)
            _fs.failpoint("compacted")
        bar.close()
        applied = Applied(
            done, skipped, [f"{trash.TRASH_DIR}/{report_md}", f"{trash.TRASH_DIR}/{report_json}"]
        )
        md_text, json_text = report(root, applied, now)
        os.close(trash.trash_root(root))  # made when missing (no Markdown original yet)
        _fs.atomic_write(
            root / trash.TRASH_DIR / report_md, md_text.encode("utf-8", "surrogateescape")
        )
        _fs.atomic_write(root / trash.TRASH_DIR / report_json, json_text.encode("ascii"))
        trash.commit(root, journal)
    except BaseException as exc:
        bar.close()
        trash.abort(root, journal, refresh)
        if isinstance(exc, OSError):
            raise ApplyError(
                f"compact --apply failed ({errors.why(exc)}); every file is as it was "
                f"or verified compacted, nothing was lost{errors.fix(exc)}"
            ) from exc
        raise
    trash.roll_forward(root, journal)
    try:
        refresh()
    except OSError as exc:
        raise ApplyError(
            "compaction is done, but the manifest could not be rewritten "
            f"({errors.why(exc)}); the next command finishes that{errors.fix(exc)}"
        ) from exc
    trash.remove_journal(root)
    return applied


def _still_as_scanned(st: os.stat_result, record: FileRecord) -> bool:
    return (st.st_size, st.st_mtime_ns, st.st_ino) == (record.size, record.mtime_ns, record.inode)


def _unchanged(fd: int, st: os.stat_result) -> bool:
    """Nothing wrote to the open file since `st` was taken (ctime moves on any write)."""
    now = os.fstat(fd)
    return (now.st_size, now.st_mtime_ns, now.st_ctime_ns) == (
        st.st_size,
        st.st_mtime_ns,
        st.st_ctime_ns,
    )


def _written_by_others(fd: int) -> bool:
    """Whether another process holds the file open for writing (a job still appending to
    its run): a read lease is refused then. Where leases are not to be had (some file
    systems, no permission), the checks of size, mtime and ctime stand alone."""
    import fcntl
    import signal

    old = signal.signal(signal.SIGIO, signal.SIG_IGN)  # a lease break must not kill us
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
    except OSError as exc:
        return exc.errno == errno.EAGAIN
    else:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        return False
    finally:
        signal.signal(signal.SIGIO, old)


def _like_original(fd: int, st: os.stat_result) -> None:
    """Give the new file the original's owner, mode and mtime (a run dated by mtime keeps
    its date; the job that owns the files can still write them)."""
    with contextlib.suppress(PermissionError):
        os.fchown(fd, st.st_uid, st.st_gid)
    os.fchmod(fd, stat.S_IMODE(st.st_mode))
    os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))


def _apply_one(root: Path, p: FilePlan, config: Config, trash_id: str, now: datetime) -> str:
    """Compact one file; "" when done, else why it was left alone (it is then as it was)."""
    head, name = _fs.parent_and_name(p.path)
    tmp = _fs.parent_and_name(temp_name(p.path))[1]
    try:
        dfd = _fs.open_dir_under(root, head)
    except OSError as exc:
        if exc.errno in errors.SYSTEM_ERRNOS:
            raise
        return f"its directory cannot be opened ({exc.strerror})"
    replaced = False
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dfd)
        with os.fdopen(fd, "rb") as src:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or not _still_as_scanned(st, p.record):
                return "changed since the scan"
            if _written_by_others(fd):
                return "another process has it open for writing"
            if p.kind == JSONL:
                why = _write_jsonl(p, config, src, dfd, tmp)
            else:
                why = _write_markdown(root, p, src, dfd, tmp, trash_id, now)
            if why:
                return why
            # The last look before the rename: a writer that came meanwhile keeps its file.
            if not _unchanged(fd, st) or _written_by_others(fd):
                os.unlink(tmp, dir_fd=dfd)
                _drop_copy(root, p, trash_id)
                return "written to while it was being compacted"
            tfd = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dfd)
            try:
                _like_original(tfd, st)
                os.fsync(tfd)
            finally:
                os.close(tfd)
            os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
            replaced = True
            os.fsync(dfd)
            return ""
    except OSError as exc:
        if exc.filename is None or exc.filename == tmp:  # the file the user knows
            exc.filename = p.path
        if replaced:  # compacted, verified, and its original (if Markdown) in the trash
            raise
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dfd)
        _drop_copy(root, p, trash_id)
        if exc.errno in errors.SYSTEM_ERRNOS:
            raise  # the disk or the system, not this file: the whole apply stops
        return f"cannot be compacted ({errors.why(exc)})"
    finally:
        os.close(dfd)


def _drop_copy(root: Path, p: FilePlan, trash_id: str) -> None:
    """A Markdown file left as it was needs no copy of itself in the trash."""
    folder = trash.trash_dir(root, strict=False)
    if p.kind == MARKDOWN and trash_id and folder is not None:
        with contextlib.suppress(OSError):
            trash.remove_copy(folder / trash_id, p.path)


def _write_jsonl(p: FilePlan, config: Config, src: BinaryIO, dfd: int, tmp: str) -> str:
    """The compacted form in `tmp`, checked by decoding it; "" or why not."""
    if jsonl_codec.compacted_header(src.fileno(), p.size):
        return "already compacted"
    hashing = _Hashing(src)
    tfd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dfd)
    with os.fdopen(tfd, "w+b") as out:
        _encode(hashing, out, p, config)  # type: ignore[arg-type]
        out.flush()
        os.fsync(out.fileno())
        size = out.tell()
        out.seek(0)
        why = ""
        if hashing.digest() != p.record.xxh3_128:
            why = "changed since the scan (its checksum differs)"
        elif jsonl_codec.decoded_digest(out) != (p.size, p.record.xxh3_128):
            why = "the compacted form did not decode to the original (left alone)"
        elif size >= p.size:
            why = "would not shrink"
    if why:
        os.unlink(tmp, dir_fd=dfd)
        return why
    p.expected = size
    return ""


def _write_markdown(
    root: Path, p: FilePlan, src: BinaryIO, dfd: int, tmp: str, trash_id: str, now: datetime
) -> str:
    """The cleaned text in `tmp`, the original first copied to the trash; "" or why not."""
    assert p.new_bytes is not None
    original = src.read()
    if xxhash.xxh3_128_hexdigest(original) != p.record.xxh3_128:
        return "changed since the scan (its checksum differs)"
    trash.write_copy(root, trash_id, _record(p, now), p.path, original, os.fstat(src.fileno()))
    _fs.failpoint("trash_copy_written")
    tfd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dfd)
    with os.fdopen(tfd, "wb") as out:
        out.write(p.new_bytes)
        out.flush()
        os.fsync(out.fileno())
    return ""


class _Hashing:
    """A reader that hashes what passes through it."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.h = xxhash.xxh3_128()

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.h.update(data)
        return data

    def readline(self, n: int = -1) -> bytes:
        data = self.f.readline(n)
        self.h.update(data)
        return data

    def digest(self) -> str:
        rest = self.f.read()  # whatever the encoder did not need (nothing, normally)
        self.h.update(rest)
        return str(self.h.hexdigest())


def _record(p: FilePlan, now: datetime) -> dict[str, Any]:
    removed = "; ".join(f"line {h['line']}: {'#' * h['level']} {h['text']}" for h in p.removed)
    reasons = [
        f"markdown compaction: {len(p.removed)} empty section(s) removed, "
        f"{p.canonicalised} heading(s) made ATX"
    ] + ([f"removed {removed}"] if removed else [])
    return trash.record_of(
        p.entry,
        [p.record],
        now=now,
        operation="compact",
        reasons=reasons,
        compacted_xxh3_128=xxhash.xxh3_128_hexdigest(p.new_bytes or b""),
    )


def report(root: Path, applied: Applied, now: datetime) -> tuple[str, str]:
    """The compaction report: each file, its sizes, and each Markdown heading removed."""
    before = sum(p.size for p in applied.done)
    after = sum(p.expected or 0 for p in applied.done)
    md = [
        f"# Compaction Report {shown_time(now)} UTC",
        "",
        f"- Root: `{root}`",
        f"- Compacted: {plural(len(applied.done), 'file')}, {human_size(before)} -> "
        f"{human_size(after)}",
        f"- Skipped at apply time: {len(applied.skipped)}",
        "- Markdown originals are in the trash: `cryptorun artifacts restore --id ID`",
        "",
        "| File | Kind | Before | After | Run |",
        "|---|---|---|---|---|",
    ]
    md += [
        f"| {md_cell(p.path)} | {p.kind} | {human_size(p.size)} | {human_size(p.expected or 0)} | "
        f"{p.entry.id} |"
        for p in applied.done
    ]
    removed = [(p, h) for p in applied.done for h in p.removed]
    md += ["", "## Removed headings", ""]
    if removed:
        md += ["| File | Line | Heading |", "|---|---|---|"]
        md += [
            f"| {md_cell(p.path)} | {h['line']} | {md_cell('#' * h['level'] + ' ' + h['text'])} |"
            for p, h in removed
        ]
    else:
        md.append("None.")
    if applied.skipped:
        md += ["", "## Skipped", "", "| File | Why |", "|---|---|"]
        md += [f"| {md_cell(p.path)} | {md_cell(p.skip)} |" for p in applied.skipped]
    doc = {
        "format": "artifacts_tasks.compact_report",
        "version": 1,
        "applied_at": iso(now),
        "compacted": [p.to_json() for p in applied.done],
        "skipped": [p.to_json() for p in applied.skipped],
    }
    return "\n".join(md) + "\n", json.dumps(doc) + "\n"
