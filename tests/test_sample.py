"""Tests for the sample artifact tree generator."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from artifacts_tasks import sample
from artifacts_tasks.sample import SampleSummary, generate

TOKEN = re.compile(r"(\d{8}_\d{6}|\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}Z)")
RUN_DIRS = (
    "microstructure/proofs",
    "bench",
    "nightly/bench",
    "smoke90",
    "explain_delta",
    "greenwall",
)


def _snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Map every file's relative path to its bytes and whole-second mtime."""
    return {
        p.relative_to(root).as_posix(): (p.read_bytes(), int(p.stat().st_mtime))
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _token_time(token: str) -> datetime:
    """Parse a run timestamp token in either supported form."""
    fmt = "%Y%m%d_%H%M%S" if "_" in token else "%Y-%m-%dT%H-%M-%SZ"
    return datetime.strptime(token, fmt).replace(tzinfo=UTC)


def _json_status(doc: dict[str, object]) -> str:
    """Normalize the three status conventions of the JSON reports."""
    if "status" in doc:
        return str(doc["status"])
    if "result" in doc:
        return "pass" if doc["result"] == "PASSED" else "fail"
    return "pass" if doc["passed"] is True else "fail"


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the module as a subprocess with the package importable."""
    pkg_parent = str(Path(sample.__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": pkg_parent + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "artifacts_tasks.sample", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SampleSummary]:
    """A default-sized tree shared by the read-only tests."""
    root = tmp_path_factory.mktemp("tree") / "artifacts"
    return root, generate(root)


def test_deterministic_same_seed(tmp_path: Path) -> None:
    """Same arguments give byte-identical trees, names and mtimes included."""
    a = _snapshot(generate(tmp_path / "a", runs_per_family=5, seed=3).root)
    b = _snapshot(generate(tmp_path / "b", runs_per_family=5, seed=3).root)
    assert a == b
    c = _snapshot(generate(tmp_path / "c", runs_per_family=5, seed=4).root)
    assert set(c) != set(a)
    assert c != a


def test_layout_and_extras(tree: tuple[Path, SampleSummary]) -> None:
    """Every family directory holds runs, and the extras are present."""
    root, summary = tree
    for rel in RUN_DIRS:
        names = {p.name for p in (root / rel).iterdir()}
        assert any(n.endswith(".jsonl") for n in names), rel
        assert any(n.endswith(".md") for n in names), rel
    assert (root / "README.txt").is_file()
    assert (root / "bench/notes.txt").is_file()
    assert "**Status:** PASS" in (root / "bench/baseline.md").read_text()
    iso = "2025-09-01T12-00-00Z"
    for name in (f"greenwall_{iso}.jsonl", f"greenwall_{iso}.md", f"verification_{iso}.json"):
        assert (root / "greenwall" / name).is_file()
    assert sorted(summary.families) == sorted(sample.FAMILIES)
    assert summary.families["proofs"] == 15
    assert summary.families["bench"] == 15 + sample.nightly_runs(15)
    assert summary.families["greenwall"] == 16


def test_summary_counts_match_disk(tree: tuple[Path, SampleSummary]) -> None:
    """The returned summary agrees with what is on disk."""
    root, summary = tree
    files = [p for p in root.rglob("*") if p.is_file()]
    assert summary.files == len(files) == sample.expected_files(15)
    assert summary.bytes == sum(p.stat().st_size for p in files)
    runs = {(p.parent, m.group(1)) for p in files if (m := TOKEN.search(p.name))}
    assert summary.runs == len(runs) == sum(summary.families.values())
    assert 1_000_000 < summary.bytes < 10_000_000


def test_statuses_consistent_and_mixed(tree: tuple[Path, SampleSummary]) -> None:
    """Each run's JSONL summary, JSON report and markdown agree; pass and fail both occur."""
    root, _ = tree
    seen: dict[str, list[str]] = {}
    for jsonl in root.rglob("*.jsonl"):
        lines = jsonl.read_text().splitlines()
        assert len(lines) >= 3
        for line in lines:
            json.loads(line)
        status = json.loads(lines[-1])["status"]
        assert status in ("pass", "fail")
        seen.setdefault(jsonl.parent.relative_to(root).as_posix(), []).append(status)
        token = TOKEN.search(jsonl.name)
        assert token is not None
        md = jsonl.with_suffix(".md").read_text()
        assert re.search(rf"Status:?\**:? {status.upper()}\b", md), jsonl
        for report in jsonl.parent.glob(f"*_{token.group(1)}.json"):
            assert _json_status(json.loads(report.read_text())) == status
    statuses = [s for group in seen.values() for s in group]
    assert 0.05 < statuses.count("fail") / len(statuses) < 0.45
    newest_bench = max((root / "bench").glob("topgainers_*.jsonl"))
    assert json.loads(newest_bench.read_text().splitlines()[-1])["status"] == "fail"
    assert "pass" in seen["bench"]


def test_mtimes_equal_run_timestamps(tree: tuple[Path, SampleSummary]) -> None:
    """Every run file's mtime is its run's timestamp, all at or before the end time."""
    root, _ = tree
    checked = 0
    for path in root.rglob("*"):
        m = TOKEN.search(path.name)
        if path.is_file() and m:
            when = _token_time(m.group(1))
            assert int(path.stat().st_mtime) == int(when.timestamp()), path
            assert when <= sample.DEFAULT_END
            checked += 1
    assert checked == sample.expected_files(15) - 3


def test_file_kb_controls_jsonl_size(tmp_path: Path) -> None:
    """`file_kb` makes each JSONL file roughly that many KB."""
    root = generate(tmp_path / "t", runs_per_family=3, file_kb=8).root
    sizes = [p.stat().st_size for p in root.rglob("*.jsonl")]
    assert sizes
    assert all(0.7 * 8192 < s < 1.4 * 8192 for s in sizes)


def test_end_option(tmp_path: Path) -> None:
    """Runs are spaced back from the given end time."""
    end = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    root = generate(tmp_path / "t", runs_per_family=4, end=end).root
    times = [_token_time(m.group(1)) for p in root.rglob("*") if (m := TOKEN.search(p.name))]
    assert max(times) <= end
    assert min(times) > datetime(2023, 12, 1, tzinfo=UTC)


def test_generate_refuses_non_empty(tmp_path: Path) -> None:
    """The library call refuses a non-empty directory."""
    (tmp_path / "x").write_text("keep")
    with pytest.raises(FileExistsError):
        generate(tmp_path)


def test_cli_files_target(tmp_path: Path) -> None:
    """`--files 2000` writes within 10% of 2000 files and prints one summary line."""
    out = tmp_path / "big"
    proc = _cli(str(out), "--files", "2000", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    count = sum(1 for p in out.rglob("*") if p.is_file())
    assert 1800 <= count <= 2200
    assert re.fullmatch(rf"wrote \d+ runs, {count} files, [\d.]+[BKMG] to .+\n", proc.stdout)


def test_cli_refuses_non_empty_dir(tmp_path: Path) -> None:
    """The CLI exits 2 with a one-line message and touches nothing."""
    (tmp_path / "keep.txt").write_text("mine")
    proc = _cli(str(tmp_path), "--runs-per-family", "2", cwd=tmp_path)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
