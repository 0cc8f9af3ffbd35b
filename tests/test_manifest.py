"""The manifest on disk: round trip, atomic save with backup, and refusal of hostile input."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from artifacts_tasks.errors import ManifestError
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


def entry(eid: str = "0123abcd", path: str = "bench/a_20250906_143022.md") -> Entry:
    record = FileRecord(path, 12, 1_700_000_000_123_456_789, 42, "0" * 32, "pass")
    directory = path.rpartition("/")[0]
    return Entry.of(
        eid, "bench", directory, "20250906T143022Z", T, "run_key", "pass", False, (record,)
    )


DIGEST = "f" * 32
COLUMNS = ["path", "size", "mtime_ns", "inode", "xxh3_128", "status"]


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
    return data


def test_round_trip_keeps_odd_names_exactly() -> None:
    odd = [
        "bench/with space_20250906_143022.md",
        os.fsdecode(b"bench/caf\xe9_latin1.md"),  # not UTF-8
        "bench/new\nline.md",
        "bench/ünï©ødé ✅.md",
        'bench/quote"back\\slash.md',
    ]
    m = Manifest(T, tuple(entry(f"{i:08x}", p) for i, p in enumerate(odd)), DIGEST)
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
    twin["id"] = "99999999"
    data["entries"].append(twin)
    with pytest.raises(ManifestError, match="a path appears twice"):
        parse_manifest(json.dumps(data).encode(), "m")


def test_save_backs_up_the_previous_manifest(tmp_path: Path) -> None:
    first = Manifest(T, (entry(),), DIGEST)
    second = Manifest(T, (entry("99999999", "bench/b_20250906_143022.md"),), DIGEST)
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
