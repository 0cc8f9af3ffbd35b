"""Walk the root, hash what changed (xxh3-128), group files into runs -> a new manifest."""

from __future__ import annotations

import errno
import os
import stat as stat_mod
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import xxhash

from . import _fs
from . import families as fam
from ._fs import display_path
from .config import Config, Family
from .errors import ManifestError, UsageError
from .manifest import Entry, FileRecord, Manifest, load_manifest, save_manifest, sort_entries
from .pins import load_pins
from .progress import NoProgress, Progress

# Files up to this size are read in one go and their status parsed from the same bytes.
WHOLE_READ_LIMIT = 4 << 20
# For bigger files, the status comes from the head (Markdown) or the tail (JSONL).
HEAD_TAIL_BYTES = 1 << 20
# A bigger JSON file is parsed for its status only up to this size.
JSON_PARSE_LIMIT = 64 << 20
VANISHED = "vanished during the scan"
# Files hashed per task: one safe directory open serves a whole batch.
BATCH = 128
# Below this many files to hash, threads cost more than they save.
PARALLEL_THRESHOLD = 64


@dataclass(frozen=True)
class Skipped:
    """A path the scan passed over, and why (shown by `scan --verbose`)."""

    path: str
    reason: str


@dataclass
class ScanResult:
    manifest: Manifest
    files_seen: int = 0
    files_hashed: int = 0
    bytes_hashed: int = 0
    files_reused: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Found:
    rel: str
    name: str
    family: str
    st: os.stat_result


def scan(
    root: Path,
    config: Config,
    *,
    previous: Manifest | None,
    pins: set[str],
    force: bool = False,
    progress: Progress | None = None,
) -> ScanResult:
    """Scan `root` into a manifest; unchanged files reuse `previous` checksums unless `force`."""
    from .errors import ScanLimitError

    classifier = fam.Classifier(config.families)
    by_name = {f.name: f for f in config.families}
    skipped: list[Skipped] = []
    found: list[_Found] = []
    limit = config.indexing.max_files_per_scan
    for rel, name, st in _walk(root, skipped):
        family = classifier.family_of(rel)
        if family is None:
            skipped.append(Skipped(rel, "unmanaged: matches no family pattern"))
            continue
        found.append(_Found(rel, name, family.name, st))
        if len(found) > limit:
            raise ScanLimitError(str(root), limit)

    old = {} if previous is None else {r.path: r for _, r in previous.files()}
    result = ScanResult(manifest=Manifest(datetime.now(UTC), ()), files_seen=len(found))
    records: dict[str, FileRecord] = {}
    to_hash: list[_Found] = []
    for f in found:
        prev = old.get(f.rel)
        if (
            not force
            and prev is not None
            and prev.size == f.st.st_size
            and prev.mtime_ns == f.st.st_mtime_ns
            and prev.inode == f.st.st_ino
        ):
            records[f.rel] = prev
            result.files_reused += 1
        else:
            to_hash.append(f)

    progress = progress or NoProgress()
    progress.start(len(to_hash), sum(f.st.st_size for f in to_hash))
    buffer = config.indexing.checksum_buffer_size_kb * 1024
    workers = config.indexing.parallel_workers
    for f, outcome in _hash_all(root, to_hash, buffer, workers):
        if isinstance(outcome, str):
            # Left out of the manifest, so nothing will act on it until a scan can read it.
            if outcome == VANISHED:
                skipped.append(Skipped(f.rel, outcome))
            else:
                result.warnings.append(f"{display_path(f.rel)}: {outcome}")
            continue
        prev = old.get(f.rel)
        if prev is not None and prev.xxh3_128 == outcome.xxh3_128:
            # Same bytes: keep what was learnt from them (status, compaction record).
            outcome = FileRecord(
                outcome.path,
                outcome.size,
                outcome.mtime_ns,
                outcome.inode,
                outcome.xxh3_128,
                prev.status,
                prev.compaction,
            )
        records[f.rel] = outcome
        result.files_hashed += 1
        result.bytes_hashed += outcome.size
        progress.advance(1, outcome.size)
    progress.close()

    result.manifest = Manifest(
        datetime.now(UTC).replace(microsecond=0),
        _group(found, records, classifier, by_name, config.config_pins().keys() | pins),
    )
    result.skipped = skipped
    return result


def _walk(root: Path, skipped: list[Skipped]) -> Iterator[tuple[str, str, os.stat_result]]:
    """Regular files under root as (relative POSIX path, name, stat); never follows a symlink."""
    stack: list[tuple[str, str]] = [(str(root), "")]
    while stack:
        path, rel_dir = stack.pop()
        try:
            it = os.scandir(path)
        except OSError as exc:
            skipped.append(Skipped(rel_dir or ".", f"unreadable directory: {exc.strerror}"))
            continue
        with it:
            subdirs = []
            for de in it:
                name = de.name
                if name.startswith("."):
                    continue  # dot-files and dot-directories are never artifacts
                rel = f"{rel_dir}/{name}" if rel_dir else name
                try:
                    if de.is_symlink():
                        skipped.append(Skipped(rel, "symlink: never followed"))
                    elif de.is_dir(follow_symlinks=False):
                        subdirs.append((de.path, rel))
                    else:
                        st = de.stat(follow_symlinks=False)
                        if stat_mod.S_ISREG(st.st_mode):
                            yield rel, name, st
                        else:
                            skipped.append(Skipped(rel, "not a regular file"))
                except FileNotFoundError:
                    skipped.append(Skipped(rel, VANISHED))
            stack.extend(reversed(sorted(subdirs)))


def _hash_all(
    root: Path, files: list[_Found], buffer: int, workers: int
) -> Iterator[tuple[_Found, FileRecord | str]]:
    """Hash files in batches that share one safely opened directory fd."""
    batches: list[list[_Found]] = []
    by_dir: dict[str, list[_Found]] = {}
    for f in files:
        by_dir.setdefault(f.rel.rpartition("/")[0], []).append(f)
    for members in by_dir.values():
        batches += [members[i : i + BATCH] for i in range(0, len(members), BATCH)]

    def one_batch(batch: list[_Found]) -> list[tuple[_Found, FileRecord | str]]:
        try:
            dir_fd = _fs.open_dir_under(root, batch[0].rel.rpartition("/")[0])
        except OSError as exc:
            return [(f, _why(exc)) for f in batch]
        try:
            out: list[tuple[_Found, FileRecord | str]] = []
            for f in batch:
                try:
                    out.append((f, hash_file(dir_fd, f.rel, f.name, buffer)))
                except OSError as exc:
                    out.append((f, _why(exc)))
            return out
        finally:
            os.close(dir_fd)

    if workers > 1 and len(files) >= PARALLEL_THRESHOLD:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for done in pool.map(one_batch, batches):
                yield from done
    else:
        for batch in batches:
            yield from one_batch(batch)


def _why(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return VANISHED
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        return "became a symlink during the scan: not followed"
    return f"cannot read ({exc.strerror}); left out of the manifest"


def hash_file(dir_fd: int, rel: str, name: str, buffer: int) -> FileRecord | str:
    """Hash one file (never through a symlink) and read its status from the same bytes."""
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        st = os.fstat(fd)
        if not stat_mod.S_ISREG(st.st_mode):
            return "not a regular file"
        if st.st_size <= WHOLE_READ_LIMIT:
            data = _read_all(fd, st.st_size)
            digest = xxhash.xxh3_128_hexdigest(data)
            status = fam.content_status(name, data)
        else:
            digest, status = _hash_big(fd, name, buffer)
        after = os.fstat(fd)
    finally:
        os.close(fd)
    if (after.st_size, after.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
        return "changed while it was read; scan again"
    return FileRecord(rel, st.st_size, st.st_mtime_ns, st.st_ino, digest, status)


def _read_all(fd: int, size: int) -> bytes:
    chunks = []
    while True:
        chunk = os.read(fd, max(size + 1, 65536))
        if not chunk:
            break
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _hash_big(fd: int, name: str, buffer: int) -> tuple[str, str]:
    h = xxhash.xxh3_128()
    head = b""
    tail = b""
    while chunk := os.read(fd, buffer):
        h.update(chunk)
        if len(head) < HEAD_TAIL_BYTES:
            head += chunk[: HEAD_TAIL_BYTES - len(head)]
        tail = (tail + chunk)[-HEAD_TAIL_BYTES:]
    lower = name.lower()
    if lower.endswith(".jsonl"):
        # Drop a partial first line: the tail starts mid-record.
        sample = tail.partition(b"\n")[2]
    elif lower.endswith(".json"):
        size = os.fstat(fd).st_size
        sample = os.pread(fd, size, 0) if size <= JSON_PARSE_LIMIT else b""
    else:
        sample = head.rpartition(b"\n")[0]
    return str(h.hexdigest()), fam.content_status(name, sample)


def _group(
    found: list[_Found],
    records: dict[str, FileRecord],
    classifier: fam.Classifier,
    by_name: dict[str, Family],
    pinned: set[str],
) -> tuple[Entry, ...]:
    groups: dict[tuple[str, str, str], list[tuple[FileRecord, datetime | None]]] = {}
    for f in found:
        record = records.get(f.rel)
        if record is None:
            continue
        directory = f.rel.rpartition("/")[0]
        key, when = classifier.run_key(by_name[f.family], f.name)
        groups.setdefault((f.family, directory, key), []).append((record, when))
    hashes = {k: fam.entry_id_hash(*k) for k in groups}
    ids = fam.assign_ids(hashes.values())
    entries = []
    for (family, directory, key), members in groups.items():
        named = next((w for _, w in members if w is not None), None)
        if named is not None:
            when, source = named, "run_key"
        else:
            newest = max(r.mtime_ns for r, _ in members)
            when, source = datetime.fromtimestamp(newest // 1_000_000_000, UTC), "mtime"
        files = tuple(sorted((r for r, _ in members), key=lambda r: r.path))
        entry_id = ids[hashes[(family, directory, key)]]
        entries.append(
            Entry(
                id=entry_id,
                family=family,
                directory=directory,
                run_key=key,
                timestamp=when,
                timestamp_source=source,
                status=fam.run_status(r.status for r in files),
                pinned=entry_id in pinned,
                files=files,
            )
        )
    return sort_entries(entries)


@dataclass
class Refreshed:
    """What `refresh` did: the scan, and whether the manifest on disk changed."""

    result: ScanResult
    written: bool
    rebuilt_from: str | None = None  # why a refused manifest was rebuilt (scan --force)


def check_root(root: Path) -> None:
    if not root.is_dir():
        what = "does not exist" if not root.exists() else "is not a directory"
        raise UsageError(f"artifacts root {root} {what}; create it or pass --root DIR")


def refresh(
    root: Path, config: Config, *, force: bool = False, progress: Progress | None = None
) -> Refreshed:
    """Rescan and save the manifest when its content changed (the caller holds the lock)."""
    check_root(root)
    rebuilt_from = None
    try:
        previous = load_manifest(root)
    except ManifestError as exc:
        if not force:
            raise
        previous, rebuilt_from = None, exc.problem
    result = scan(
        root, config, previous=previous, pins=set(load_pins(root)), force=force, progress=progress
    )
    written = rebuilt_from is not None or not result.manifest.same_content(previous)
    if written:
        save_manifest(root, result.manifest, previous_valid=rebuilt_from is None)
    return Refreshed(result, written, rebuilt_from)
