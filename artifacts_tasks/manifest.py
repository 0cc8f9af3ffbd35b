"""The manifest: runs and their files with checksums; schema-checked load, atomic save."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import _fs
from .errors import ManifestError

MANIFEST_NAME = ".manifest.json"
BACKUP_NAME = ".manifest.backup.json"
REJECTED_NAME = ".manifest.rejected.json"
FORMAT = "artifacts_tasks.manifest"
VERSION = 1


def iso(when: datetime) -> str:
    """UTC ISO 8601 with a Z, to the second: the only time format in our files."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class FileRecord:
    """One artifact file as scanned. `path` is relative to the root, POSIX separators."""

    path: str
    size: int
    mtime_ns: int
    inode: int
    xxh3_128: str
    status: str
    compaction: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "path": self.path,
            "size": self.size,
            "mtime_ns": self.mtime_ns,
            "inode": self.inode,
            "xxh3_128": self.xxh3_128,
            "status": self.status,
        }
        if self.compaction is not None:
            out["compaction"] = self.compaction
        return out


@dataclass(frozen=True)
class Entry:
    """A run: the files of one family, in one directory, that share a run key."""

    id: str
    family: str
    directory: str
    run_key: str
    timestamp: datetime
    timestamp_source: str
    status: str
    pinned: bool
    files: tuple[FileRecord, ...]
    size: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", sum(f.size for f in self.files))

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


@dataclass(frozen=True)
class Manifest:
    """All entries, newest first."""

    generated_at: datetime
    entries: tuple[Entry, ...]

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

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "generated_at": iso(self.generated_at),
            "entries": [e.to_json() for e in self.entries],
        }

    def same_content(self, other: Manifest | None) -> bool:
        """True when only `generated_at` differs (then nothing needs writing)."""
        return other is not None and self.entries == other.entries


def sort_entries(entries: Iterable[Entry]) -> tuple[Entry, ...]:
    return tuple(sorted(entries, key=Entry.sort_key, reverse=True))


def manifest_path(root: Path) -> Path:
    return root / MANIFEST_NAME


def load_manifest(root: Path) -> Manifest | None:
    """The manifest under `root`, validated; None when there is none yet."""
    path = manifest_path(root)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ManifestError(str(path), f"cannot read: {exc.strerror}") from None
    return parse_manifest(raw, str(path))


def parse_manifest(raw: bytes, shown: str) -> Manifest:
    """Parse and check a manifest's bytes: JSON, schema, then path safety."""
    from .config import schema_error

    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        what = "empty" if not raw.strip() else f"not valid JSON (truncated?): {exc}"
        raise ManifestError(shown, what) from None
    checked = _unicode_safe(data) if b"\\ud" in raw or b"\\uD" in raw else data
    found = schema_error("manifest.schema.json", checked)
    if found is not None:
        key, problem = found
        raise ManifestError(shown, f"fails its schema at {key or 'the top level'}: {problem}")
    entries = []
    seen_ids: set[str] = set()
    seen_paths: set[str] = set()
    for e in data["entries"]:
        directory = e["directory"]
        if directory and not _fs.is_safe_relpath(directory):
            raise ManifestError(shown, f"entry {e['id']} has an unsafe directory {directory!r}")
        if e["id"] in seen_ids:
            raise ManifestError(shown, f"entry id {e['id']} appears twice")
        seen_ids.add(e["id"])
        files = []
        for f in e["files"]:
            p = f["path"]
            parent = p.rpartition("/")[0]
            if not _fs.is_safe_relpath(p) or parent != directory:
                raise ManifestError(shown, f"entry {e['id']} holds an unsafe path {p!r}")
            if p in seen_paths:
                raise ManifestError(shown, f"path {p!r} appears twice")
            seen_paths.add(p)
            files.append(FileRecord(**f))
        entry = Entry(
            id=e["id"],
            family=e["family"],
            directory=directory,
            run_key=e["run_key"],
            timestamp=parse_iso(e["timestamp"]),
            timestamp_source=e["timestamp_source"],
            status=e["status"],
            pinned=e["pinned"],
            files=tuple(files),
        )
        if entry.size != e["size"] or entry.file_count != e["file_count"]:
            raise ManifestError(
                shown, f"entry {e['id']}: size or file count disagrees with its files"
            )
        entries.append(entry)
    return Manifest(parse_iso(data["generated_at"]), tuple(entries))


def _unicode_safe(value: Any) -> Any:
    """A copy with lone surrogates (non-UTF-8 file names) replaced, for the schema check only."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, list):
        return [_unicode_safe(v) for v in value]
    if isinstance(value, dict):
        return {_unicode_safe(k): _unicode_safe(v) for k, v in value.items()}
    return value


def encode_manifest(manifest: Manifest) -> bytes:
    return (json.dumps(manifest.to_json(), indent=1, sort_keys=False) + "\n").encode("ascii")


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
