"""The manifest on disk: round trip, atomic save with backup, and refusal of hostile input."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from artifacts_tasks.errors import ManifestError
from artifacts_tasks.families import entry_id_hash
from artifacts_tasks.manifest import (
    BACKUP_NAME,
    MANIFEST_NAME,
    Entry,
    FileRecord,
    Manifest,
    encode_manifest,
    load_manifest,
    parse_manifest,
    save_manifest,
)

from .conftest import run_main, write

T = datetime(2025, 9, 6, 14, 30, 22, tzinfo=UTC)


def entry(path: str = "bench/a_20250906_143022.md", key: str = "20250906T143022Z") -> Entry:
    """An entry as a scan would make it: its id is a prefix of its run's hash."""
    record = FileRecord(path, 12, 1_700_000_000_123_456_789, 42, 1_700_000_000_5, "0" * 32, "pass")
    directory = path.rpartition("/")[0]
    eid = entry_id_hash("bench", directory, key)[:8]
    return Entry.of(eid, "bench", directory, key, T, "run_key", "pass", False, (record,))


DIGEST = "f" * 32
COLUMNS = ["path", "size", "mtime_ns", "inode", "ctime_ns", "xxh3_128", "status"]


def doc(**changes: Any) -> dict[str, Any]:
    data = json.loads(encode_manifest(Manifest(T, (entry(),), DIGEST)))
    e = data["entries"][0]
    for key, value in changes.items():
        if key.startswith("file_"):
            e["files"][0][COLUMNS.index(key[5:])] = value
        elif key.startswith("entry_"):
            e[key[6:]] = value
        else:
            data[key] = value
    if "entry_id" not in changes:  # keep the id true to the (possibly changed) run
        e["id"] = entry_id_hash(e["family"], e["directory"], e["run_key"])[:8]
    return data


def test_round_trip_keeps_odd_names_exactly() -> None:
    odd = [
        "bench/with space_20250906_143022.md",
        os.fsdecode(b"bench/caf\xe9_latin1.md"),  # not UTF-8
        "bench/new\nline.md",
        "bench/ünï©ødé ✅.md",
        'bench/quote"back\\slash.md',
    ]
    m = Manifest(T, tuple(entry(p, f"run{i}") for i, p in enumerate(odd)), DIGEST)
    raw = encode_manifest(m)
    raw.decode("ascii")  # plain ASCII on disk, whatever the names
    back = parse_manifest(raw, "m")
    assert back == m
    assert [os.fsencode(f.path) for _, f in back.files()][1] == b"bench/caf\xe9_latin1.md"


HOSTILE = [
    (b"", "empty"),
    (b'{"format": "artifacts_tasks.manifest", "version": 1, "entr', "not valid JSON"),
    (b"[]", "fails its schema"),
    (b"[" * 100000, "not valid JSON"),
]


@pytest.mark.parametrize(("raw", "words"), HOSTILE)
def test_garbage_is_refused(raw: bytes, words: str) -> None:
    with pytest.raises(ManifestError, match=words) as info:
        parse_manifest(raw, "artifacts/.manifest.json")
    assert "scan --force" in str(info.value)


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"version": 2}, "schema"),
        ({"extra": 1}, "schema"),
        ({"file_path": "/etc/passwd"}, "schema"),
        ({"file_path": "bench/../../etc/passwd"}, "schema"),
        ({"file_path": "../outside.md", "entry_directory": ".."}, "schema"),
        ({"file_path": "other/a.md"}, "outside its directory"),
        ({"file_path": "bench//a.md"}, "schema"),
        ({"file_path": "bench/a.md/"}, "schema"),
        ({"entry_directory": "", "file_path": "a.md"}, None),  # a run at the top is fine
        ({"file_path": "bench/./a.md"}, "schema"),
        ({"file_path": "bench/x\n/../../../etc/passwd"}, "schema"),
        ({"file_xxh3_128": "zz"}, "schema"),
        ({"file_size": -1}, "schema"),
        ({"entry_size": 99}, "disagrees"),
        ({"entry_id": "../x"}, "schema"),
        ({"entry_status": "maybe"}, "schema"),
        ({"entry_timestamp": "yesterday"}, "schema"),
        ({"file_path": "bench/.manifest.backup.json"}, "schema"),  # dot-files: never
        ({"file_path": ".trash/x.md", "entry_directory": ".trash"}, "schema"),
        ({"entry_id": "deadbeef"}, "does not match its run"),
        ({"file_path": "bench/\ud800.md"}, "no file name this system has"),
        ({"file_path": "bench/\udc2e\udc2e"}, "no file name this system has"),
        ({"file_path": os.fsdecode(b"bench/caf\xe9.md")}, None),  # surrogateescape: fine
    ],
)
def test_hostile_manifest_is_refused(changes: dict[str, Any], words: str | None) -> None:
    raw = json.dumps(doc(**changes)).encode()
    if words is None:
        assert parse_manifest(raw, "m").entries[0].files[0].path == changes["file_path"]
        return
    with pytest.raises(ManifestError, match=words):
        parse_manifest(raw, "m")


def test_duplicate_ids_and_paths_are_refused() -> None:
    data = doc()
    data["entries"].append(data["entries"][0])
    with pytest.raises(ManifestError, match="appears twice"):
        parse_manifest(json.dumps(data).encode(), "m")
    data = doc()
    twin = json.loads(json.dumps(data["entries"][0]))
    twin["run_key"] = "other"
    twin["id"] = entry_id_hash("bench", "bench", "other")[:8]
    data["entries"].append(twin)
    with pytest.raises(ManifestError, match="a path appears twice"):
        parse_manifest(json.dumps(data).encode(), "m")


def test_save_backs_up_the_previous_manifest(tmp_path: Path) -> None:
    first = Manifest(T, (entry(),), DIGEST)
    second = Manifest(T, (entry("bench/b_20250907_143022.md", "20250907T143022Z"),), DIGEST)
    save_manifest(tmp_path, first)
    assert not (tmp_path / BACKUP_NAME).exists()
    save_manifest(tmp_path, second)
    assert load_manifest(tmp_path) == second
    assert parse_manifest((tmp_path / BACKUP_NAME).read_bytes(), "b") == first
    assert sorted(p.name for p in tmp_path.iterdir()) == [BACKUP_NAME, MANIFEST_NAME]


def test_a_refused_manifest_never_replaces_a_good_backup(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    write(root, "bench/a_20250906_143022.md", "Status: PASS\n")
    assert run_main("--root", root, "scan").code == 0
    write(root, "bench/b_20250907_143022.md", "Status: PASS\n")
    assert run_main("--root", root, "scan").code == 0
    good_backup = (root / BACKUP_NAME).read_bytes()
    (root / MANIFEST_NAME).write_bytes(b'{"format": "artifacts_tasks.manifest", "trunc')

    refused = run_main("--root", root, "list")
    assert refused.code == 2
    assert refused.err.startswith("manifest error: ")
    assert "scan --force" in refused.err
    assert (root / MANIFEST_NAME).read_bytes().endswith(b"trunc")  # nothing touched

    rebuilt = run_main("--root", root, "scan", "--force")
    assert rebuilt.code == 0, rebuilt.err
    assert "rebuilt" in rebuilt.out
    assert (root / BACKUP_NAME).read_bytes() == good_backup
    assert (root / ".manifest.rejected.json").read_bytes().endswith(b"trunc")
    assert len(load_manifest(root).entries) == 2  # type: ignore[union-attr]


def test_with_its_config_a_manifest_may_only_hold_its_runs_files() -> None:
    """A forged entry (right id, valid paths) naming files no family would take."""
    from artifacts_tasks.config import default_config
    from artifacts_tasks.families import Classifier

    classifier = Classifier(default_config().families)
    assert parse_manifest(json.dumps(doc()).encode(), "m", classifier=classifier)
    for path, key in [("bench/NOTES.txt", "NOTES"), ("bench/a_20250906_143022.md", "other")]:
        forged = doc(file_path=path, entry_run_key=key)
        with pytest.raises(ManifestError, match="not one of its run's"):
            parse_manifest(json.dumps(forged).encode(), "m", classifier=classifier)
