"""compact, cat and the readers, as users depend on them: smaller files, the same bytes back,
Markdown originals in the trash, and a SIGKILL at any step losing nothing."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import xxhash

from artifacts_tasks import compact

from .conftest import REPO, write

CORPORA = REPO.parent / "shared" / "corpora"
needs_corpora = pytest.mark.skipif(
    not CORPORA.is_dir() and os.environ.get("CI") != "true",
    reason="../shared/corpora is not beside this clone",
)
CONFIG = """\
retention:
  bench: {keep: -1}
  greenwall: {keep: -1}
compaction:
  jsonl: {min_size_kb: 20}
  markdown: {min_size_kb: 0}
"""


def big_jsonl(n: int, status: str = "pass") -> bytes:
    rows = [
        json.dumps(
            {
                "ts": f"2025-09-0{1 + i % 9}T00:00:{i % 60:02d}Z",
                "p99_ms": i % 97 + 0.5,
                "endpoint": f"/scan/{['momentum', 'breakout', 'reversal'][i % 3]}",
            }
        )
        for i in range(n)
    ]
    return ("\n".join(rows) + "\n" + json.dumps({"status": status}) + "\n").encode()


def cli(
    root: Path, *argv: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    base = {k: v for k, v in os.environ.items() if k != "ARTIFACTS_FAILPOINT"}
    return subprocess.run(
        [sys.executable, "-m", "artifacts_tasks", "--root", str(root), "--no-progress", *argv],
        cwd=root.parent,
        env={**base, **(env or {})},
        capture_output=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def ok(root: Path, *argv: str) -> str:
    r = cli(root, *argv)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout.decode()


def listed(root: Path) -> dict[str, dict[str, Any]]:
    doc = json.loads(ok(root, "list", "--json"))
    return {p: e for e in doc["entries"] for p in e["paths"]}


def manifest_rows(root: Path) -> dict[str, list[Any]]:
    lines = (root / ".manifest.json").read_text().splitlines()[1:-1]
    return {row[0]: row for line in lines for row in json.loads(line.rstrip(","))["files"]}


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    root = tmp_path / "artifacts"
    files = {
        "bench/run_20250901_000000.jsonl": big_jsonl(3000, "fail"),
        "bench/run_20250902_000000.jsonl": big_jsonl(2500),
        "bench/run_20250902_000000.md": b"# Bench\n\nStatus: PASS\n",
        "bench/small_20250903_000000.jsonl": big_jsonl(5),
        "greenwall/gw_20250903_000000.md": (
            b"Title\n=====\n\n## Empty\n\n## Results\n\nStatus: PASS\n\n### Nothing here\n"
        ),
    }
    for rel, data in files.items():
        write(root, rel, data)
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "artifacts.yaml").write_text(CONFIG)
    ok(root, "scan")
    return root, files


def test_dry_run_says_what_and_how_small_and_changes_nothing(
    project: tuple[Path, dict[str, bytes]],
) -> None:
    root, files = project
    before = {rel: (root / rel).read_bytes() for rel in files}
    plan = json.loads(ok(root, "compact", "--json"))
    by_path = {f["path"]: f for f in plan["files"]}
    assert plan["dry_run"] is True
    big = by_path["bench/run_20250901_000000.jsonl"]
    assert big["skipped"] is None and big["expected_size"] < big["size"] / 5
    assert by_path["bench/small_20250903_000000.jsonl"]["skipped"].startswith(
        "under compaction.jsonl.min_size_kb"
    )
    md = by_path["greenwall/gw_20250903_000000.md"]
    assert [h["text"] for h in md["removed_headings"]] == ["Empty", "Nothing here"]
    assert md["canonicalised_headings"] == 1
    assert {rel: (root / rel).read_bytes() for rel in files} == before
    text = ok(root, "compact", "--verbose")
    assert "Compaction Plan (DryRun: true)" in text and "removes line 4: ## Empty" in text


def test_apply_compacts_and_every_reader_gives_the_original_back(
    project: tuple[Path, dict[str, bytes]],
) -> None:
    root, files = project
    statuses = {p: e["status"] for p, e in listed(root).items()}
    stats = {rel: (root / rel).stat() for rel in files}
    ok(root, "compact", "--apply")
    for rel in ("bench/run_20250901_000000.jsonl", "bench/run_20250902_000000.jsonl"):
        path = root / rel
        assert path.stat().st_size < len(files[rel]) / 5
        assert path.stat().st_mtime_ns == stats[rel].st_mtime_ns  # a run dated by mtime keeps it
        assert path.stat().st_mode == stats[rel].st_mode
        assert b"".join(compact.read_original(path)) == files[rel]
        assert list(compact.read_records(path)) == [
            json.loads(line) for line in files[rel].splitlines()
        ]
        assert cli(root, "cat", rel).stdout == files[rel]  # relative to the root
        row = manifest_rows(root)[rel]
        assert row[7]["original_size"] == len(files[rel])
        assert row[7]["original_xxh3_128"] == xxhash.xxh3_128_hexdigest(files[rel])
    assert {p: e["status"] for p, e in listed(root).items()} == statuses
    small = "bench/small_20250903_000000.jsonl"
    assert (root / small).read_bytes() == files[small]
    assert cli(root, "verify").returncode == 0
    # Idempotent: nothing more to do, and the compacted files are not read again.
    again = json.loads(ok(root, "compact", "--json"))
    assert all(f["skipped"] for f in again["files"])
    assert {f["skipped"] for f in again["files"] if f["kind"] == "jsonl"} >= {"already compacted"}


def test_cat_from_the_current_directory_and_of_a_plain_file(
    project: tuple[Path, dict[str, bytes]],
) -> None:
    root, files = project
    ok(root, "compact", "--apply")
    rel = "bench/run_20250901_000000.jsonl"
    assert cli(root, "cat", f"artifacts/{rel}").stdout == files[rel]  # cwd is root's parent
    assert (
        cli(root, "cat", "bench/run_20250902_000000.md").stdout
        == files["bench/run_20250902_000000.md"]
    )
    missing = cli(root, "cat", "bench/nope.jsonl")
    assert missing.returncode == 2 and b"no such file" in missing.stderr


def test_markdown_original_goes_to_the_trash_and_restore_undoes_it(
    project: tuple[Path, dict[str, bytes]],
) -> None:
    root, files = project
    rel = "greenwall/gw_20250903_000000.md"
    ok(root, "compact", "--apply")
    cleaned = (root / rel).read_bytes()
    assert cleaned == b"# Title\n\n## Results\n\nStatus: PASS\n\n"
    report = next((root / ".trash").glob("compact_report_*.md")).read_text()
    assert "| greenwall/gw_20250903_000000.md | 4 | ## Empty |" in report
    trashed = [json.loads(p.read_text()) for p in (root / ".trash").glob("*/.record.json")]
    (record,) = trashed
    assert record["operation"] == "compact" and record["files"][0]["path"] == rel
    ok(root, "restore", "--id", record["id"])
    assert (root / rel).read_bytes() == files[rel]
    assert cli(root, "verify").returncode == 0


def test_restore_of_a_compaction_refuses_when_the_cleaned_file_was_edited(
    project: tuple[Path, dict[str, bytes]],
) -> None:
    root, _ = project
    rel = "greenwall/gw_20250903_000000.md"
    ok(root, "compact", "--apply")
    (root / rel).write_text("# Title\n\nedited by hand since\n")
    record = json.loads(next((root / ".trash").glob("*/.record.json")).read_text())
    r = cli(root, "restore", "--id", record["id"])
    assert r.returncode == 1 and b"refusing to overwrite" in r.stderr
    assert (root / rel).read_text() == "# Title\n\nedited by hand since\n"


def test_a_file_changed_since_the_scan_is_left_alone(
    project: tuple[Path, dict[str, bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from artifacts_tasks import trash
    from artifacts_tasks.cli import main

    root, files = project
    rel = "bench/run_20250902_000000.jsonl"
    real = trash.write_journal

    def journal_then_edit(where: Path, journal: Any) -> None:
        real(where, journal)
        if journal.state == "moving":  # between the plan and the move, once
            with open(root / rel, "ab") as f:
                f.write(b'{"late": true}\n')

    monkeypatch.setattr(trash, "write_journal", journal_then_edit)
    assert (
        main(
            [
                "--root",
                str(root),
                "--config",
                str(root.parent / "config" / "artifacts.yaml"),
                "compact",
                "--apply",
                "--no-progress",
            ]
        )
        == 0
    )
    assert (root / rel).read_bytes() == files[rel] + b'{"late": true}\n'
    assert not list((root / "bench").glob(".*tmp*"))


# ---- crash safety ------------------------------------------------------------------------

# Two steps through the real entry point; tests/reliability/test_crash_sweep.py kills
# compaction (and the restore that undoes it) at every step and during every recovery.
STEPS = ["compacted:2", "committed"]


@pytest.mark.parametrize("step", STEPS)
def test_compact_killed_at_each_step_loses_nothing(
    project: tuple[Path, dict[str, bytes]], step: str
) -> None:
    root, files = project
    killed = cli(root, "compact", "--apply", env={"ARTIFACTS_FAILPOINT": step})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    after = cli(root, "list")
    assert after.returncode == 0, after.stderr
    for rel, data in files.items():
        assert b"".join(compact.read_original(root / rel)) in (data, _cleaned(rel, data))
    leftovers = [p for p in root.rglob("*") if ".tmp-" in p.name]
    assert leftovers == [] and not (root / ".journal.json").exists()
    assert cli(root, "verify").returncode == 0
    # A Markdown file keeps a trash copy exactly when it was cleaned.
    md = "greenwall/gw_20250903_000000.md"
    copies = list((root / ".trash").glob(f"*/{md}")) if (root / ".trash").exists() else []
    assert bool(copies) == ((root / md).read_bytes() != files[md])
    ok(root, "compact", "--apply")  # finishes the job
    for rel, data in files.items():
        assert b"".join(compact.read_original(root / rel)) in (data, _cleaned(rel, data))


def _cleaned(rel: str, data: bytes) -> bytes:
    if rel.endswith(".md") and data.startswith(b"Title"):
        return b"# Title\n\n## Results\n\nStatus: PASS\n\n"
    return data


# ---- real data ---------------------------------------------------------------------------


@needs_corpora
def test_real_corpora_compact_and_come_back_byte_for_byte(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    sources = {
        "bench/zeek_20250901_000000.jsonl": CORPORA / "jsonl" / "zeek_x509.ndjson",
        "bench/amazon_20250902_000000.jsonl": CORPORA
        / "jsonl"
        / "simdjson_amazon_cellphones.ndjson",
        "bench/fthypt_20250903_000000.jsonl": CORPORA
        / "jsonl"
        / "freqtrade_hyperopt_SampleStrategy.fthypt.jsonl",
        "greenwall/trap_20250901_000000.md": CORPORA
        / "markdown"
        / "nautilus_trader_docs_environment_setup.md",
        "greenwall/history_20250902_000000.md": CORPORA / "markdown" / "requests_HISTORY.md",
    }
    for rel, src in sources.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, root / rel)
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "artifacts.yaml").write_text(CONFIG)
    ok(root, "compact", "--apply")
    for rel, src in sources.items():
        if rel.endswith(".jsonl"):
            assert cli(root, "cat", rel).stdout == src.read_bytes()
    report = next((root / ".trash").glob("compact_report_*.md")).read_text()
    assert "## Nautilus CLI developer guide" in report  # the trap heading, named
    history = (root / "greenwall/history_20250902_000000.md").read_text()
    assert history.startswith("# Release History\n") and "\n## 0.0.1 (2011-02-13)\n" in history
    assert cli(root, "verify").returncode == 0


@needs_corpora
def test_every_jsontestsuite_file_as_a_line_survives_compaction_and_cat(tmp_path: Path) -> None:
    files = sorted((CORPORA / "jsontestsuite").rglob("*.json"))
    lines = [p.read_bytes().replace(b"\n", b" ") for p in files]
    data = b"\n".join(lines * 40) + b"\n"  # big enough for min_size_kb
    root = tmp_path / "artifacts"
    write(root, "bench/suite_20250901_000000.jsonl", data)
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "artifacts.yaml").write_text(CONFIG)
    ok(root, "compact", "--apply")
    packed = (root / "bench/suite_20250901_000000.jsonl").read_bytes()
    assert len(packed) < len(data) / 10
    assert cli(root, "cat", "bench/suite_20250901_000000.jsonl").stdout == data


def test_doit_compact_apply_compacts_once_then_has_nothing_to_do(tmp_path: Path) -> None:
    from .test_tasks import doit

    root = tmp_path / "artifacts"
    write(root, "bench/run_20250901_000000.jsonl", big_jsonl(3000))
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "artifacts.yaml").write_text(CONFIG)
    (tmp_path / "dodo.py").write_text(
        "from artifacts_tasks.tasks import *  # noqa: F403\n"
        "DOIT_CONFIG = {'dep_file': '.doit.json', 'backend': 'json'}\n"
    )
    first = doit(tmp_path, "compact_apply")
    assert first.code == 0, first
    assert "Compacted 1 file" in first.out
    packed = (root / "bench/run_20250901_000000.jsonl").read_bytes()
    second = doit(tmp_path, "compact_apply")
    assert second.code == 0 and "Nothing was compacted." in second.out
    plan = doit(tmp_path, "compact")
    assert (
        plan.code == 0 and "To Compact: 0 files" in plan.out and "1 already compacted" in plan.out
    )
    assert (root / "bench/run_20250901_000000.jsonl").read_bytes() == packed


# ---- found by review ---------------------------------------------------------------------


def test_a_file_a_job_still_has_open_for_writing_is_left_alone(
    project: tuple[Path, dict[str, bytes]],
) -> None:
    root, files = project
    rel = "bench/run_20250902_000000.jsonl"
    with open(root / rel, "ab") as still_running:
        out = ok(root, "compact", "--apply", "--verbose")
        assert "another process has it open for writing" in out
        still_running.write(b'{"status": "fail", "late": true}\n')
    assert (root / rel).read_bytes() == files[rel] + b'{"status": "fail", "late": true}\n'
    assert listed(root)[rel]["status"] == "fail"


def _compacted_copy(project: tuple[Path, dict[str, bytes]]) -> bytes:
    root, _ = project
    ok(root, "compact", "--apply")
    return (root / "bench/run_20250901_000000.jsonl").read_bytes()


@pytest.mark.parametrize("forge", ["lookalike", "weird status", "huge level", "version 2"])
def test_a_plain_file_that_only_looks_compacted_is_a_plain_file(
    project: tuple[Path, dict[str, bytes]], forge: str
) -> None:
    root, _ = project
    packed = _compacted_copy(project)
    header, first, _ = packed.split(b"\n", 2)
    doc = json.loads(header)
    if forge == "weird status":
        doc["status"] = "weird"
    elif forge == "huge level":
        header = header.replace(b'"zstd_level":19', b'"zstd_level":1e400')
    elif forge == "version 2":
        doc["version"] = 2
    if forge in ("weird status", "version 2"):
        header = json.dumps(doc, separators=(",", ":")).encode()
    data = header + b"\n" + first + b'\n{"status": "fail"}\n'
    rel = "bench/forged_20250905_000000.jsonl"
    write(root, rel, data)
    for argv in (["scan"], ["list"], ["verify"], ["gc"]):
        r = cli(root, *argv)
        assert r.returncode == 0, (argv, r.stderr)
    assert listed(root)[rel]["status"] == "fail"  # from its content, not a forged header
    assert len(manifest_rows(root)[rel]) == 7  # no compaction record
    assert cli(root, "cat", rel).stdout == data


def test_cat_of_a_damaged_compacted_file_prints_nothing_and_fails(
    project: tuple[Path, dict[str, bytes]],
) -> None:
    root, _ = project
    packed = _compacted_copy(project)
    rel = "bench/run_20250901_000000.jsonl"
    tampered = packed.replace(b'"p99_ms": 0.5', b'"p99_ms": 9.5', 1)
    assert tampered != packed
    (root / rel).write_bytes(tampered)
    r = cli(root, "cat", rel)
    assert r.returncode == 1 and r.stdout == b"" and b"cannot be decoded" in r.stderr


def test_a_decompression_bomb_is_refused_within_bounded_memory(tmp_path: Path) -> None:
    import struct

    import zstandard

    from artifacts_tasks import jsonl_codec

    stream = zstandard.ZstdCompressor(level=1).compressobj()
    chunk = stream.compress(b"\0" * (200 << 20)) + stream.flush()
    header = jsonl_codec.Header(100, "0" * 32, 1, "pass").to_line()
    bomb = tmp_path / "bomb.jsonl"
    bomb.write_bytes(header + b'{"a": 1}\n' + struct.pack(">I", len(chunk)) + chunk)
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            "import resource, sys; "
            "resource.setrlimit(resource.RLIMIT_AS, (600 << 20, 600 << 20)); "
            "from artifacts_tasks.cli import main; sys.exit(main(['cat', sys.argv[1]]))",
            str(bomb),
        ],
        capture_output=True,
        timeout=60,
    )
    assert r.returncode == 1 and b"inflates past" in r.stderr, r.stderr


def test_a_very_long_name_compacts(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    rel = f"bench/run_20250901_000000_{'x' * 220}.jsonl"
    write(root, rel, big_jsonl(3000))
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "artifacts.yaml").write_text(CONFIG)
    ok(root, "compact", "--apply")
    assert manifest_rows(root)[rel][7]["original_size"] == len(big_jsonl(3000))
    assert cli(root, "cat", rel).stdout == big_jsonl(3000)


def test_markdown_that_would_change_its_status_is_left_alone(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    text = "# Smoke 90\n\n## ❌ FAIL\n\n## Details\n\n### 12 of 14 checks PASSED\n\n- a\n"
    write(root, "greenwall/gw_20250903_000000.md", text)
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "artifacts.yaml").write_text(CONFIG)
    before = listed(root)["greenwall/gw_20250903_000000.md"]["status"]
    out = ok(root, "compact", "--apply", "--verbose")
    assert "its status would change" in out
    assert (root / "greenwall/gw_20250903_000000.md").read_text() == text
    assert listed(root)["greenwall/gw_20250903_000000.md"]["status"] == before


def test_compaction_keeps_the_owner(project: tuple[Path, dict[str, bytes]]) -> None:
    root, _ = project
    rel = "bench/run_20250901_000000.jsonl"
    try:
        os.chown(root / rel, 65534, 65534)
    except PermissionError:
        pytest.skip("needs root to give the file to another user")
    ok(root, "compact", "--apply")
    st = (root / rel).stat()
    assert (st.st_uid, st.st_gid) == (65534, 65534)
    assert manifest_rows(root)[rel][7]  # it was compacted


@pytest.mark.parametrize("step", ["moved:2"])
def test_undoing_a_markdown_compaction_survives_a_kill(
    project: tuple[Path, dict[str, bytes]], step: str
) -> None:
    root, files = project
    rel = "greenwall/gw_20250903_000000.md"
    ok(root, "compact", "--apply")
    cleaned = (root / rel).read_bytes()
    record = json.loads(next((root / ".trash").glob("*/.record.json")).read_text())
    killed = cli(root, "restore", "--id", record["id"], env={"ARTIFACTS_FAILPOINT": step})
    assert killed.returncode == -signal.SIGKILL
    assert cli(root, "list").returncode == 0
    here = (root / rel).read_bytes()
    assert here in (cleaned, files[rel])  # one of the two is in place, always
    if here == cleaned:
        assert list((root / ".trash").glob(f"*/{rel}"))  # and the original is in the trash
    assert cli(root, "verify").returncode == 0


def test_a_compacted_file_cut_short_is_damaged_not_plain(
    project: tuple[Path, dict[str, bytes]],
) -> None:
    root, _ = project
    packed = _compacted_copy(project)
    rel = "bench/run_20250901_000000.jsonl"
    (root / rel).write_bytes(packed[: len(packed) - 100])
    r = cli(root, "cat", rel)
    assert r.returncode == 1 and r.stdout == b"" and b"cannot be decoded" in r.stderr
    plan = json.loads(ok(root, "compact", "--json"))
    (entry,) = [f for f in plan["files"] if f["path"] == rel]
    assert entry["skipped"] == "already compacted"  # never compacted twice
