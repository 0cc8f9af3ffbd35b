"""Walk the root, hash what changed (xxh3-128), group files into runs -> a new manifest."""

from __future__ import annotations

import errno
import os
import re
import stat as stat_mod
import threading
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import xxhash

from . import _fs, jsonl_codec
from . import families as fam
from ._fs import display_path
from .config import Config, Family
from .errors import ManifestError, ScanLimitError, UsageError
from .manifest import (
    Entry,
    FileRecord,
    Manifest,
    Row,
    manifest_path,
    now_utc,
    parse_header,
    parse_iso,
    parse_manifest,
    read_manifest_bytes,
    save_manifest,
    sort_entries,
)
from .pins import is_pinned, load_pins, pin_markers
from .progress import NoProgress, Progress

# Files up to this size are read in one go and their status parsed from the same bytes.
WHOLE_READ_LIMIT = 4 << 20
# For bigger Markdown files, the status comes from this much of the head.
HEAD_BYTES = 1 << 20
# A bigger JSON file is parsed for its status only up to this size.
JSON_PARSE_LIMIT = 64 << 20
# Bump when grouping, run keys, ids or statuses change: every manifest is then rebuilt.
RULES_VERSION = 1
VANISHED = "vanished during the scan"
UNMANAGED = "unmanaged: matches no family pattern"
# Files hashed per task: one safe directory open serves a whole batch.
BATCH = 128
# Below this many files to hash, starting worker processes costs more than it saves.
PARALLEL_THRESHOLD = 512


@dataclass(frozen=True)
class Skipped:
    """A path the scan passed over, and why (shown by `scan --verbose`)."""

    path: str
    reason: str


@dataclass
class ScanResult:
    """What a scan found. `manifest` is None only for `refresh(..., need_manifest=False)`."""

    manifest: Manifest | None
    files_seen: int = 0
    files_hashed: int = 0
    bytes_hashed: int = 0
    files_reused: int = 0
    runs: int = 0
    families: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class _Found(NamedTuple):
    """An artifact file a walk found."""

    rel: str
    name: str
    family: str
    st: os.stat_result


@dataclass
class Tree:
    """The artifact files a walk found, what it passed over, and a digest of their stats."""

    found: list[_Found]
    skipped: list[Skipped]
    digest: str
    warnings: list[str] = field(default_factory=list)  # what could not be read at all


_NO_ROW: tuple[str, Row | None] = ("", None)


def _rescan(
    root: Path,
    config: Config,
    classifier: fam.Classifier,
    tree: Tree,
    signature: str,
    *,
    previous: Manifest | None,
    pinned: set[str],
    force: bool,
    progress: Progress | None,
) -> ScanResult:
    found = tree.found
    result = ScanResult(
        manifest=None, files_seen=len(found), skipped=tree.skipped, warnings=list(tree.warnings)
    )
    old = previous.file_rows() if previous is not None else {}
    records: dict[str, FileRecord] = {}
    to_hash: list[_Found] = []
    for f in found:
        row = old.get(f.rel, _NO_ROW)[1]
        st = f.st
        if (
            not force
            and row is not None
            and row[1] == st.st_size
            and row[2] == st.st_mtime_ns
            and row[3] == st.st_ino
            and row[4] == st.st_ctime_ns
        ):
            records[f.rel] = FileRecord(*row)
        else:
            to_hash.append(f)
    result.files_reused = len(records)

    progress = progress or NoProgress()
    progress.start(len(to_hash), sum(f.st.st_size for f in to_hash))
    keys: dict[str, tuple[str, datetime | None]] = {}
    try:
        for rel, outcome, key, when in _hash_all(
            root, to_hash, config, config.indexing.parallel_workers
        ):
            if isinstance(outcome, str):
                # Left out of the manifest: nothing acts on it until a scan can read it.
                if outcome == VANISHED:
                    tree.skipped.append(Skipped(rel, outcome))
                else:
                    result.warnings.append(f"{display_path(rel)}: {outcome}")
                continue
            prev = old.get(rel, _NO_ROW)[1]
            if prev is not None and len(prev) > 7 and prev[5] == outcome.xxh3_128:
                # Same bytes: keep their compaction record (the status is read afresh).
                outcome = outcome._replace(compaction=prev[7])
            records[rel] = outcome
            keys[rel] = (key, when)
            result.files_hashed += 1
            result.bytes_hashed += outcome.size
            progress.advance(1, outcome.size)
    finally:
        progress.close()

    by_name = {f.name: f for f in config.families}
    previous_ids = previous.ids_by_key() if previous is not None else {}
    dated = previous.mtime_dated() if previous is not None else {}
    entries = _group(found, records, keys, classifier, by_name, pinned, previous_ids, dated)
    result.manifest = Manifest(
        now_utc(),
        entries,
        config.families_digest(),
        # A scan that could not read everything records no signature: the next one retries.
        tree_signature="" if result.warnings else signature,
    )
    result.runs = len(entries)
    result.families = len({e.family for e in entries})
    return result


def tree_signature(tree_digest: str, config: Config, pinned: Iterable[str]) -> str:
    """What a scan's result depends on: the files' stats, the family config, the pins, and
    the rules themselves (an upgrade that changes them must regroup)."""
    text = (
        f"{RULES_VERSION}\0{tree_digest}\0{config.families_digest()}\0{chr(1).join(sorted(pinned))}"
    )
    return str(xxhash.xxh3_128_hexdigest(text.encode()))


def walk(root: Path, classifier: fam.Classifier, limit: int, *, collect: bool = True) -> Tree:
    """Artifact files under root, never through a symlink; the rest goes to `skipped`.

    The digest covers every non-dot file (name, mode, size, mtime_ns, inode) in each
    directory where some family can match, so any add, remove, edit or rename there changes
    it. `collect=False` computes only the digest: that is all an up-to-date check needs, and
    this loop is the floor of every rescan, so it does per file only what it must.
    """
    found: list[_Found] = []
    skipped: list[Skipped] = []
    warnings: list[str] = []
    digest = xxhash.xxh3_128()
    stack: list[tuple[str, str]] = [(str(root), "")]
    while stack:
        path, rel_dir = stack.pop()
        try:
            it = os.scandir(path)
        except OSError as exc:
            reason = f"unreadable directory ({exc.strerror}); its files are left out"
            skipped.append(Skipped(rel_dir or ".", reason))
            warnings.append(f"{display_path(rel_dir or '.')}: {reason}")
            continue
        matcher = classifier.for_directory(rel_dir)
        prefix = f"{rel_dir}/" if rel_dir else ""
        names: list[str] = []
        numbers = array("q")
        entries: list[tuple[os.DirEntry[str], os.stat_result]] = []
        subdirs = []
        with it:
            for de in it:
                name = de.name
                if name[0] == ".":
                    continue  # dot-files and dot-directories are never artifacts
                try:
                    if de.is_dir(follow_symlinks=False):
                        subdirs.append((de.path, prefix + name))
                        continue
                    if matcher is None:
                        if collect:
                            skipped.append(Skipped(prefix + name, _why_not(de)))
                        continue
                    st = de.stat(follow_symlinks=False)
                except FileNotFoundError:
                    skipped.append(Skipped(prefix + name, VANISHED))
                    continue
                except OSError as exc:
                    reason = f"cannot stat ({exc.strerror}); left out of the manifest"
                    skipped.append(Skipped(prefix + name, reason))
                    warnings.append(f"{display_path(prefix + name)}: {reason}")
                    continue
                names.append(name)
                numbers.extend(
                    (st.st_mode, st.st_size, st.st_mtime_ns, st.st_ino & _INT63, st.st_ctime_ns)
                )
                if collect:
                    entries.append((de, st))
        if names:
            digest.update(
                f"{rel_dir}\0{len(names)}\0{'/'.join(names)}".encode("utf-8", "surrogateescape")
            )
            digest.update(numbers)
        if collect and matcher is not None:
            _classify(entries, matcher, prefix, found, skipped)
            if len(found) > limit:
                raise ScanLimitError(str(root), limit)
        stack.extend(sorted(subdirs, reverse=True))
    return Tree(found, skipped, digest.hexdigest(), warnings)


_INT63 = (1 << 63) - 1  # inodes are unsigned 64-bit; the digest array holds signed ones


def _why_not(de: os.DirEntry[str]) -> str:
    return "symlink: never followed" if de.is_symlink() else UNMANAGED


def _classify(
    entries: list[tuple[os.DirEntry[str], os.stat_result]],
    matcher: fam.DirMatcher,
    prefix: str,
    found: list[_Found],
    skipped: list[Skipped],
) -> None:
    """Sort one directory's files into artifacts (`found`) and the rest (`skipped`)."""
    for de, st in entries:
        name = de.name
        rel = prefix + name
        m = matcher.match(rel if matcher.whole_path else name)
        if de.is_symlink():
            skipped.append(Skipped(rel, "symlink: never followed"))
        elif m is None or m.lastgroup is None:
            skipped.append(Skipped(rel, UNMANAGED))
        elif not stat_mod.S_ISREG(st.st_mode):
            skipped.append(Skipped(rel, "not a regular file"))
        else:
            found.append(_Found(rel, name, matcher.families[m.lastgroup].name, st))


_Hashed = tuple[str, "FileRecord | str", str, "datetime | None"]  # rel, outcome, run key, time


def _hash_all(root: Path, files: list[_Found], config: Config, workers: int) -> Iterator[_Hashed]:
    """Hash files, read their statuses and run keys, in per-directory batches.

    This is CPU work on small files: threads only fight over the GIL, so big jobs go to
    worker processes (at most one per CPU). Each batch opens its directory safely once.
    """
    run_patterns = {f.name: f.run_pattern for f in config.families}
    buffer = config.indexing.checksum_buffer_size_kb * 1024
    by_dir: dict[str, list[_Found]] = {}
    for f in files:
        by_dir.setdefault(f.rel.rpartition("/")[0], []).append(f)
    batches = [
        (
            str(root),
            rel_dir,
            [(f.rel, f.name, run_patterns[f.family]) for f in members[i : i + BATCH]],
            buffer,
        )
        for rel_dir, members in by_dir.items()
        for i in range(0, len(members), BATCH)
    ]
    workers = min(workers, os.cpu_count() or 1)
    # fork() is only safe from a single-threaded process (doit -P thread is not one).
    if workers > 1 and len(files) >= PARALLEL_THRESHOLD and threading.active_count() == 1:
        import multiprocessing  # only when it pays

        with multiprocessing.get_context("fork").Pool(workers) as pool:
            for done in pool.imap_unordered(_hash_batch, batches):
                yield from done
    else:
        for batch in batches:
            yield from _hash_batch(batch)


def _hash_batch(batch: tuple[str, str, list[tuple[str, str, str | None]], int]) -> list[_Hashed]:
    """Hash one directory's batch of files through one safely opened directory fd."""
    root, rel_dir, files, buffer = batch
    keys = [fam.run_key(name, re.compile(p) if p else None) for _, name, p in files]
    try:
        dir_fd = _fs.open_dir_under(Path(root), rel_dir)
    except OSError as exc:
        return [(rel, _why(exc), *key) for (rel, _, _), key in zip(files, keys, strict=True)]
    try:
        out: list[_Hashed] = []
        for (rel, name, _), key in zip(files, keys, strict=True):
            try:
                out.append((rel, hash_file(dir_fd, rel, name, buffer), *key))
            except OSError as exc:
                out.append((rel, _why(exc), *key))
        return out
    finally:
        os.close(dir_fd)


def _why(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return VANISHED
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        return "became a symlink during the scan: not followed"
    return f"cannot read ({exc.strerror}); left out of the manifest"


def hash_file(dir_fd: int, rel: str, name: str, buffer: int) -> FileRecord | str:
    """Hash one file (never through a symlink) and read its status from the same bytes."""
    # O_NONBLOCK: a FIFO swapped in after the walk must not hang the scan (fstat refuses it).
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd)
    try:
        st = os.fstat(fd)
        if not stat_mod.S_ISREG(st.st_mode):
            return "not a regular file"
        if st.st_size <= WHOLE_READ_LIMIT:
            data = _read_all(fd, st.st_size)
            digest = xxhash.xxh3_128_hexdigest(data)
            compacted = _compacted(fd, st.st_size) if jsonl_codec.is_compacted(data) else None
            status = compacted[1] if compacted else fam.content_status(name, data)
        else:
            digest, status = _hash_big(fd, name, buffer)
            compacted = _compacted(fd, st.st_size)
            status = compacted[1] if compacted else status
        after = os.fstat(fd)
    finally:
        os.close(fd)
    if (after.st_size, after.st_mtime_ns, after.st_ctime_ns) != (
        st.st_size,
        st.st_mtime_ns,
        st.st_ctime_ns,
    ):
        return "changed while it was read; scan again"
    return FileRecord(
        rel,
        st.st_size,
        st.st_mtime_ns,
        st.st_ino,
        st.st_ctime_ns,
        digest,
        status,
        compacted[0] if compacted else None,
    )


def _compacted(fd: int, size: int) -> tuple[dict[str, Any], str] | None:
    """A compacted JSONL file's compaction record and status (kept in its header, as its
    bytes no longer show them); None for any other file, one that only looks like ours
    included."""
    header = jsonl_codec.compacted_header(fd, size)
    if header is None:
        return None
    record = {
        "codec": jsonl_codec.CODEC,
        "original_size": header.original_size,
        "original_xxh3_128": header.original_xxh3_128,
    }
    return record, header.status or fam.UNKNOWN


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
    """Hash a file too big to read at once, then read its status from where it lies."""
    h = xxhash.xxh3_128()
    size = 0
    while chunk := os.read(fd, buffer):
        h.update(chunk)
        size += len(chunk)
    lower = name.lower()
    found: str | None = None
    if lower.endswith(".jsonl"):
        found = _jsonl_status_from_end(fd, size, buffer)
    elif lower.endswith(".json"):
        found = fam.json_status(os.pread(fd, size, 0)) if size <= JSON_PARSE_LIMIT else None
    elif lower.endswith(".md"):
        head = os.pread(fd, HEAD_BYTES, 0)
        found = fam.markdown_status(
            head.rpartition(b"\n")[0].decode("utf-8", "replace").splitlines()
        )
    return str(h.hexdigest()), found or fam.name_status(name) or fam.UNKNOWN


def _jsonl_status_from_end(fd: int, size: int, buffer: int) -> str | None:
    """`families.jsonl_status` for a big file: blocks read backwards, stopping at a verdict."""
    end = size
    carry = b""  # the start of a line whose beginning lies in an earlier block
    while end > 0:
        start = max(0, end - max(buffer, 1 << 20))
        block = os.pread(fd, end - start, start) + carry
        if start > 0:
            cut = block.find(b"\n")
            carry, block = (block, b"") if cut < 0 else (block[: cut + 1], block[cut + 1 :])
        found = fam.jsonl_status(block)
        if found is not None:
            return found
        end = start
    return None


def _group(
    found: list[_Found],
    records: dict[str, FileRecord],
    keys: dict[str, tuple[str, datetime | None]],
    classifier: fam.Classifier,
    by_name: dict[str, Family],
    pinned: set[str],
    previous_ids: dict[fam.RunKey, str],
    dated: dict[fam.RunKey, tuple[str, frozenset[tuple[str, str]]]],
) -> tuple[Entry, ...]:
    groups: dict[tuple[str, str, str], list[tuple[FileRecord, datetime | None]]] = {}
    for f in found:
        record = records.get(f.rel)
        if record is None:
            continue
        directory = f.rel.rpartition("/")[0]
        known = keys.get(f.rel)
        key, when = known if known is not None else classifier.run_key(by_name[f.family], f.name)
        groups.setdefault((f.family, directory, key), []).append((record, when))
    hashes = {k: fam.entry_id_hash(*k) for k in groups}
    ids = fam.assign_ids(hashes, previous_ids)
    entries = []
    for (family, directory, key), members in groups.items():
        named = next((w for _, w in members if w is not None), None)
        if named is not None:
            when, source = named, "run_key"
        else:
            source = "mtime"
            before = dated.get((family, directory, key))
            if before is not None and before[1] == {(r.path, r.xxh3_128) for r, _ in members}:
                # Same files, same bytes: keep the time recorded for them, so a copy or a
                # restore that resets mtimes does not move the run (or change the plan).
                when = parse_iso(before[0])
            else:
                newest = max(r.mtime_ns for r, _ in members)
                when = datetime.fromtimestamp(newest // 1_000_000_000, UTC)
        files = tuple(sorted((r for r, _ in members), key=lambda r: r.path))
        entry_id = ids[(family, directory, key)]
        status = fam.run_status(r.status for r in files)
        entries.append(
            Entry.of(
                entry_id,
                family,
                directory,
                key,
                when,
                source,
                status,
                is_pinned(pinned, entry_id, family, directory, key),
                files,
            )
        )
    return sort_entries(entries)


@dataclass
class Refreshed:
    """What `refresh` did: the scan, and whether the manifest on disk changed."""

    result: ScanResult
    written: bool
    rebuilt_from: str | None = None  # why a refused manifest was rebuilt (scan --force)
    notes: list[str] = field(default_factory=list)  # what recovering an interrupted apply did

    @property
    def manifest(self) -> Manifest:
        if self.result.manifest is None:
            raise AssertionError("refresh(..., need_manifest=False) loads no manifest")
        return self.result.manifest


def check_root(root: Path) -> None:
    if not root.is_dir():
        what = "does not exist" if not root.exists() else "is not a directory"
        raise UsageError(f"artifacts root {root} {what}; create it or pass --root DIR")


def refresh(
    root: Path,
    config: Config,
    *,
    force: bool = False,
    progress: Progress | None = None,
    need_manifest: bool = True,
    need_skipped: bool = False,
    recover: bool = False,
) -> Refreshed:
    """Bring the manifest up to date with the tree (the caller holds the lock).

    With `recover` (only while holding `_fs.root_lock`: a journal is "interrupted" only
    when its writer no longer holds the lock), an apply that was interrupted is first
    finished or rolled back (`trash.recover`); its journal is removed once the manifest
    agrees with the tree again. Every command does this before anything else.

    When the tree's signature equals the one recorded in an intact manifest, nothing
    changed: the manifest is neither rewritten nor, unless asked for, even parsed, and the
    walk classifies nothing (unless the skipped files are asked for).
    """
    check_root(root)
    _fs.remove_stale_temps(root)  # left by a writer that died mid-write
    notes: list[str] = []
    journal = False
    if recover:
        from . import trash

        journal = trash.has_journal(root)
        notes = trash.recover(root)
    done = _refresh(root, config, force, progress, need_manifest, need_skipped)
    done.notes = notes
    if journal:
        trash.remove_journal(root)
    return done


def _refresh(
    root: Path,
    config: Config,
    force: bool,
    progress: Progress | None,
    need_manifest: bool,
    need_skipped: bool,
) -> Refreshed:
    pinned = config.config_pins().keys() | pin_markers(load_pins(root))
    classifier = fam.Classifier(config.families)
    limit = config.indexing.max_files_per_scan
    shown = str(manifest_path(root))
    raw, unreadable = None, None
    try:
        raw = read_manifest_bytes(root)  # read once: header check, then any full parse
    except ManifestError as exc:
        unreadable = exc
    header = None if force or raw is None else parse_header(raw)
    # Without a usable header a full rescan follows: walk once, collecting the files.
    collect = need_skipped or header is None
    tree = walk(root, classifier, limit, collect=collect)
    signature = tree_signature(tree.digest, config, pinned)
    if header is not None and header.tree_signature == signature:
        if header.files > limit:
            raise ScanLimitError(str(root), limit)
        unchanged = ScanResult(
            parse_manifest(raw, shown, classifier=classifier) if need_manifest and raw else None,
            files_seen=header.files,
            files_reused=header.files,
            runs=header.entries,
            families=header.families,
            skipped=tree.skipped,
        )
        return Refreshed(unchanged, written=False)
    if not collect:
        tree = walk(root, classifier, limit)
        signature = tree_signature(tree.digest, config, pinned)
    rebuilt_from = None
    try:
        if unreadable is not None:
            raise unreadable
        previous = parse_manifest(raw, shown) if raw is not None else None
    except ManifestError as exc:
        if not force:
            raise
        previous, rebuilt_from = None, exc.problem
    result = _rescan(
        root,
        config,
        classifier,
        tree,
        signature,
        previous=previous,
        pinned=pinned,
        force=force,
        progress=progress,
    )
    manifest = result.manifest
    assert manifest is not None
    written = (
        rebuilt_from is not None
        or previous is None
        or previous.tree_signature != signature
        or not manifest.same_content(previous)
    )
    if written:
        save_manifest(root, manifest, previous_valid=rebuilt_from is None)
    return Refreshed(result, written, rebuilt_from)
