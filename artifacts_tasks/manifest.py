"""The manifest: runs and their files with checksums; schema-checked load, atomic save."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import xxhash

from . import _fs
from .errors import ManifestError
from .families import Classifier, entry_id_hash, run_key

MANIFEST_NAME = ".manifest.json"
BACKUP_NAME = ".manifest.backup.json"
REJECTED_NAME = ".manifest.rejected.json"
FORMAT = "artifacts_tasks.manifest"
VERSION = 1


def iso(when: datetime) -> str:
    """UTC ISO 8601 with a Z, to the second: the only time format in our files.

    Built by hand: strftime's %Y does not pad years below 1000 to four digits.
    """
    t = when.astimezone(UTC)
    return f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}Z"


def shown_time(when: datetime) -> str:
    """`2025-09-06 14:30:22`: how tables show a time (UTC)."""
    return iso(when)[:19].replace("T", " ")


def parse_iso(text: str) -> datetime:
    """Inverse of `iso` (the schema has checked the shape; datetime checks the values)."""
    return datetime(
        int(text[0:4]),
        int(text[5:7]),
        int(text[8:10]),
        int(text[11:13]),
        int(text[14:16]),
        int(text[17:19]),
        tzinfo=UTC,
    )


class FileRecord(NamedTuple):
    """One artifact file as scanned. `path` is relative to the root, POSIX separators.

    Stored in the manifest as the row
    `[path, size, mtime_ns, inode, ctime_ns, xxh3_128, status]`, plus the compaction record
    as an 8th item once the file is compacted. A rescan trusts the checksum while size,
    mtime, inode and ctime are unchanged (ctime, because `touch -r` or `cp -p` can put an
    old mtime back on new content, but nobody can set ctime).
    """

    path: str
    size: int
    mtime_ns: int
    inode: int
    ctime_ns: int
    xxh3_128: str
    status: str
    compaction: dict[str, Any] | None = None

    def to_json(self) -> list[Any]:
        row: list[Any] = [
            self.path,
            self.size,
            self.mtime_ns,
            self.inode,
            self.ctime_ns,
            self.xxh3_128,
            self.status,
        ]
        if self.compaction is not None:
            row.append(self.compaction)
        return row


class Entry(NamedTuple):
    """A run: the files of one family, in one directory, that share a run key."""

    id: str
    family: str
    directory: str
    run_key: str
    timestamp: datetime
    timestamp_source: str
    status: str
    pinned: bool
    size: int
    files: tuple[FileRecord, ...]

    @classmethod
    def of(
        cls,
        id: str,
        family: str,
        directory: str,
        run_key: str,
        timestamp: datetime,
        timestamp_source: str,
        status: str,
        pinned: bool,
        files: tuple[FileRecord, ...],
    ) -> Entry:
        """An entry whose size is the sum of its files' sizes."""
        return cls(
            id,
            family,
            directory,
            run_key,
            timestamp,
            timestamp_source,
            status,
            pinned,
            sum(f.size for f in files),
            files,
        )

    @property
    def file_count(self) -> int:
        return len(self.files)

    def sort_key(self) -> tuple[datetime, str, str]:
        """Newest-first ordering key (ties broken by run key, then id, for stability)."""
        return (self.timestamp, self.run_key, self.id)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "family": self.family,
            "directory": self.directory,
            "run_key": self.run_key,
            "timestamp": iso(self.timestamp),
            "timestamp_source": self.timestamp_source,
            "status": self.status,
            "pinned": self.pinned,
            "size": self.size,
            "file_count": self.file_count,
            "files": [f.to_json() for f in self.files],
        }


# A file's columns as the manifest stores them; a FileRecord has the same layout.
Row = Sequence[Any]


class Manifest:
    """All entries, newest first, and the digest of the family config they were grouped by.

    A loaded manifest keeps its validated JSON and builds `Entry` objects on first use: a
    rescan that finds nothing changed only needs each file's row, and 50,000 objects it
    would never look at cost more than the rest of that rescan.
    """

    __slots__ = ("_entries", "_raw", "families_digest", "generated_at", "tree_signature")

    def __init__(
        self,
        generated_at: datetime,
        entries: tuple[Entry, ...] = (),
        families_digest: str = "",
        *,
        tree_signature: str = "",
        raw: list[dict[str, Any]] | None = None,
    ) -> None:
        self.generated_at = generated_at
        self.families_digest = families_digest
        self.tree_signature = tree_signature  # the scan's view of the tree (see scan.refresh)
        self._entries: tuple[Entry, ...] | None = entries if raw is None else None
        self._raw = raw

    @property
    def entries(self) -> tuple[Entry, ...]:
        if self._entries is None:
            self._entries = tuple(_entry_from_json(e) for e in self._raw or ())
        return self._entries

    def file_rows(self) -> dict[str, tuple[str, Row]]:
        """Path -> (family, row) for every file, without building entries."""
        if self._entries is None:
            return {row[0]: (e["family"], row) for e in self._raw or () for row in e["files"]}
        return {f.path: (e.family, f) for e in self._entries for f in e.files}

    def mtime_dated(self) -> dict[tuple[str, str, str], tuple[str, frozenset[tuple[str, str]]]]:
        """Runs dated by mtime: (family, directory, run key) -> (time, {(path, xxh3)})."""
        if self._entries is None:
            return {
                (e["family"], e["directory"], e["run_key"]): (
                    e["timestamp"],
                    frozenset((row[0], row[5]) for row in e["files"]),
                )
                for e in self._raw or ()
                if e["timestamp_source"] == "mtime"
            }
        return {
            (e.family, e.directory, e.run_key): (
                iso(e.timestamp),
                frozenset((f.path, f.xxh3_128) for f in e.files),
            )
            for e in self._entries
            if e.timestamp_source == "mtime"
        }

    def ids_by_key(self) -> dict[tuple[str, str, str], str]:
        """(family, directory, run key) -> id, without building entries."""
        if self._entries is None:
            return {(e["family"], e["directory"], e["run_key"]): e["id"] for e in self._raw or ()}
        return {(e.family, e.directory, e.run_key): e.id for e in self._entries}

    def by_id(self) -> dict[str, Entry]:
        return {e.id: e for e in self.entries}

    def files(self) -> Iterator[tuple[Entry, FileRecord]]:
        for entry in self.entries:
            for record in entry.files:
                yield entry, record

    def markers(self) -> tuple[set[str], set[str]]:
        """Ids of each family's newest run (last_run) and newest passing run (last_pass)."""
        last_run: dict[str, Entry] = {}
        last_pass: dict[str, Entry] = {}
        for e in self.entries:
            if e.family not in last_run or e.sort_key() > last_run[e.family].sort_key():
                last_run[e.family] = e
            if e.status == "pass" and (
                e.family not in last_pass or e.sort_key() > last_pass[e.family].sort_key()
            ):
                last_pass[e.family] = e
        return {e.id for e in last_run.values()}, {e.id for e in last_pass.values()}

    def same_content(self, other: Manifest | None) -> bool:
        """True when only `generated_at` differs (then nothing needs writing)."""
        return other is not None and (
            other is self
            or (self.families_digest == other.families_digest and self.entries == other.entries)
        )

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Manifest)
            and self.generated_at == other.generated_at
            and self.same_content(other)
        )

    __hash__ = None  # type: ignore[assignment]


def _entry_from_json(e: dict[str, Any]) -> Entry:
    files = tuple([FileRecord(*row) for row in e["files"]])
    return Entry(
        e["id"],
        e["family"],
        e["directory"],
        e["run_key"],
        parse_iso(e["timestamp"]),
        e["timestamp_source"],
        e["status"],
        e["pinned"],
        e["size"],
        files,
    )


def sort_entries(entries: Iterable[Entry]) -> tuple[Entry, ...]:
    return tuple(sorted(entries, key=Entry.sort_key, reverse=True))


def manifest_path(root: Path) -> Path:
    return root / MANIFEST_NAME


def read_manifest_bytes(root: Path) -> bytes | None:
    """The manifest file's bytes; None when there is none yet."""
    path = manifest_path(root)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ManifestError(str(path), f"cannot read: {exc.strerror}") from None


def load_manifest(root: Path, *, classifier: Classifier | None = None) -> Manifest | None:
    """The manifest under `root`, validated; None when there is none yet."""
    raw = read_manifest_bytes(root)
    if raw is None:
        return None
    return parse_manifest(raw, str(manifest_path(root)), classifier=classifier)


def parse_manifest(raw: bytes, shown: str, *, classifier: Classifier | None = None) -> Manifest:
    """Parse and check a manifest's bytes, so that it can only name what a scan would.

    JSON, then the schema (relative paths, no part starting with '.'), then: each file
    directly in its entry's directory, no path twice, names that encode back to the bytes
    they came from, ids that are prefixes of their run's hash, counts and sizes that add
    up, and, given the `classifier` of the config the manifest was written under, every
    file in its entry's family and run.
    """
    from .config import schema_error

    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        what = "empty" if not raw.strip() else f"not valid JSON (truncated?): {exc}"
        raise ManifestError(shown, what) from None
    escaped = b"\\ud" in raw or b"\\uD" in raw
    checked = _unicode_safe(data) if escaped else data
    found = schema_error("manifest.schema.json", checked)
    if found is not None:
        key, problem = found
        raise ManifestError(shown, f"fails its schema at {key or 'the top level'}: {problem}")
    entries: list[dict[str, Any]] = data["entries"]
    seen_ids: set[str] = set()
    seen_paths: set[str] = set()
    n_files = 0
    for e in entries:
        if e["id"] in seen_ids:
            raise ManifestError(shown, f"entry id {e['id']} appears twice")
        seen_ids.add(e["id"])
        directory = e["directory"]
        prefix = f"{directory}/" if directory else ""
        cut = len(prefix)
        if not entry_id_hash(e["family"], directory, e["run_key"]).startswith(e["id"]):
            raise ManifestError(shown, f"entry {e['id']} does not match its run's id")
        run_re = classifier.run_pattern(e["family"]) if classifier is not None else None
        size = 0
        for row in e["files"]:
            # The schema has refused absolute paths and empty or dot parts; this keeps
            # each file directly in its entry's directory, so no entry reaches elsewhere.
            path = row[0]
            if not path.startswith(prefix) or "/" in path[cut:]:
                raise ManifestError(
                    shown, f"entry {e['id']} holds a path outside its directory: {path!r}"
                )
            if classifier is not None:
                family = classifier.family_of(path)
                name = path[cut:]
                if (
                    family is None
                    or family.name != e["family"]
                    or (run_key(name, run_re)[0] != e["run_key"])
                ):
                    raise ManifestError(
                        shown, f"entry {e['id']} holds {path!r}, which is not one of its run's"
                    )
            size += row[1]
        seen_paths.update(row[0] for row in e["files"])
        n_files += len(e["files"])
        if size != e["size"] or len(e["files"]) != e["file_count"]:
            problem = f"entry {e['id']}: size or file count disagrees with its files"
            raise ManifestError(shown, problem)
    if len(seen_paths) != n_files:
        raise ManifestError(shown, "a path appears twice")
    if escaped:
        for path in seen_paths:
            try:
                path.encode("utf-8", "surrogateescape")
            except UnicodeEncodeError:
                raise ManifestError(shown, f"{path!r} is no file name this system has") from None
    counts = data["counts"]
    if (counts["entries"], counts["files"], counts["families"]) != (
        len(entries),
        n_files,
        len({e["family"] for e in entries}),
    ):
        raise ManifestError(shown, "its counts disagree with its entries")
    return Manifest(
        parse_iso(data["generated_at"]),
        (),
        data["families_digest"],
        tree_signature=data["tree_signature"],
        raw=entries,
    )


class Header(NamedTuple):
    """The first line of a manifest: enough for a rescan that finds nothing changed."""

    tree_signature: str
    entries: int
    files: int
    families: int
    content_digest: str


def read_header(root: Path) -> Header | None:
    """`parse_header` of the manifest under `root`; None when it is missing or unreadable."""
    try:
        return parse_header(manifest_path(root).read_bytes())
    except OSError:
        return None


def parse_header(raw: bytes) -> Header | None:
    """The header of an intact manifest this tool wrote, or None (then a full load decides).

    Intact means the rest of the file still hashes to the `body_xxh3_128` in the header:
    the bytes are exactly those written, which were built from checked data.
    """
    line, _, body = raw.partition(b"\n")
    try:
        head = json.loads(line + b"]}")
        if (
            head["format"] == FORMAT
            and head["version"] == VERSION
            and head["body_xxh3_128"] == xxhash.xxh3_128_hexdigest(body)
        ):
            c = head["counts"]
            return Header(
                str(head["tree_signature"]),
                int(c["entries"]),
                int(c["files"]),
                int(c["families"]),
                str(head["content_digest"]),
            )
    except (ValueError, TypeError, KeyError, RecursionError):
        pass
    return None


def _unicode_safe(value: Any) -> Any:
    """A copy with lone surrogates (non-UTF-8 file names) replaced, for the schema check only."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, list):
        return [_unicode_safe(v) for v in value]
    if isinstance(value, dict):
        return {_unicode_safe(k): _unicode_safe(v) for k, v in value.items()}
    return value


def content_digest(entries: Sequence[Entry]) -> str:
    """xxh3-128 of what the manifest says about the runs: ids, families, keys, times,
    statuses, pins, and each file's path, size, checksum and compaction; not where the
    bytes sit (mtime, inode, ctime). A tree restored from a CI cache has new stats but the
    same content, so what depends on this (doit gc, report) stays up to date."""
    h = xxhash.xxh3_128()
    for e in entries:
        files = [(f.path, f.size, f.xxh3_128, f.status, f.compaction) for f in e.files]
        row = (e.id, e.family, e.directory, e.run_key, iso(e.timestamp), e.status, e.pinned, files)
        h.update(json.dumps(row, separators=(",", ":")).encode("utf-8", "surrogateescape"))
        h.update(b"\n")
    return str(h.hexdigest())


def encode_manifest(manifest: Manifest) -> bytes:
    """Compact JSON, one entry per line: small and quick to parse, still readable and diffable.

    Line 1 is the header and opens the entries array; the rest (the body) is hashed into
    the header so that `read_header` can tell the file is exactly as written.
    """
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    entries = manifest.entries
    lines = [dumps(e.to_json()) for e in entries]
    body = ((",\n".join(lines) + "\n" if lines else "") + "]}\n").encode("ascii")
    head = dumps(
        {
            "format": FORMAT,
            "version": VERSION,
            "generated_at": iso(manifest.generated_at),
            "families_digest": manifest.families_digest,
            "tree_signature": manifest.tree_signature,
            "content_digest": content_digest(entries),
            "counts": {
                "entries": len(entries),
                "files": sum(len(e.files) for e in entries),
                "families": len({e.family for e in entries}),
            },
            "body_xxh3_128": xxhash.xxh3_128_hexdigest(body),
            "entries": [],
        }
    )
    return head[:-2].encode("ascii") + b"\n" + body


def save_manifest(root: Path, manifest: Manifest, *, previous_valid: bool = True) -> None:
    """Back up the current manifest, then replace it atomically (caller holds the lock).

    A current manifest that was refused is set aside as `.manifest.rejected.json` instead,
    so it never overwrites a good backup and can still be inspected.
    """
    path = manifest_path(root)
    if path.exists():
        if previous_valid:
            _fs.atomic_write(root / BACKUP_NAME, path.read_bytes())
        else:
            os.replace(path, root / REJECTED_NAME)
            _fs.fsync_dir(root)
    _fs.atomic_write(path, encode_manifest(manifest))


def now_utc() -> datetime:
    """The current time, truncated to the second (manifest precision)."""
    return datetime.now(UTC).replace(microsecond=0)
