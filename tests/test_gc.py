"""gc planning (pure): the mission's summary block, the JSON shape, safety on real runs."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from artifacts_tasks import gc
from artifacts_tasks.cli import human_size
from artifacts_tasks.config import build_config
from artifacts_tasks.manifest import Manifest
from artifacts_tasks.sample import generate
from artifacts_tasks.scan import refresh

NOW = datetime(2025, 9, 7, tzinfo=UTC)


def sample_manifest(tmp_path: Path) -> tuple[Manifest, object]:
    root = tmp_path / "artifacts"
    generate(root, runs_per_family=15, seed=7)
    config = build_config({}, "defaults")
    return refresh(root, config).manifest, config


def test_summary_block_has_the_missions_shape(tmp_path: Path) -> None:
    manifest, config = sample_manifest(tmp_path)
    p = gc.plan(manifest, config, now=NOW)  # type: ignore[arg-type]
    lines = gc.summary_lines(p, human_size)
    total = len(manifest.entries)
    deleted = p.delete
    assert lines[0] == "GC Plan Summary (DryRun: true)"
    assert lines[1] == f"Total Entries: {total}"
    assert lines[2] == (
        f"To Delete: {len(deleted)} entries ({human_size(sum(v.item.size for v in deleted))}, "
        f"{sum(v.item.file_count for v in deleted)} files)"
    )
    assert lines[3] == f"To Keep: {total - len(deleted)} entries"
    assert lines[4].startswith("Safety: ") and lines[4].endswith(" last-run kept")
    assert lines[5:7] == ["", "By Family:"]
    assert [line.split(":")[0].strip() for line in lines[7:]] == [
        "proofs",
        "bench",
        "smoke90",
        "explain",
        "greenwall",
    ]
    # Independent of the plan: the built-in keep counts against each family's run count
    # (the sample's newest and newest passing runs are among the newest few).
    keep = {"proofs": 10, "bench": 10, "smoke90": 8, "explain": 12, "greenwall": 12}
    runs = {f: sum(e.family == f for e in manifest.entries) for f in keep}
    assert len(deleted) == sum(max(0, runs[f] - keep[f]) for f in keep)
    for line, family in zip(lines[7:], keep, strict=True):
        assert line.startswith(
            f"  {family}: keep {min(runs[family], keep[family])}/{runs[family]},"
        )


def test_plan_keeps_protected_runs_and_json_matches_the_contract(tmp_path: Path) -> None:
    manifest, _ = sample_manifest(tmp_path)
    oldest_bench = min(
        (e for e in manifest.entries if e.family == "bench"), key=lambda e: e.sort_key()
    )
    config = build_config({"retention": {"bench": {"keep": 1, "pin": [oldest_bench.id]}}}, "c")
    p = gc.plan(manifest, config, now=NOW, family="bench")
    data = gc.plan_json(p)
    json.dumps(data)  # serialisable as it is
    assert set(data) == {
        "dry_run",
        "total_entries",
        "delete",
        "keep",
        "skipped",
        "by_family",
        "safety",
    }
    kept = {k["id"]: k["reasons"] for k in data["keep"]}
    assert "pinned" in kept[oldest_bench.id]
    last_run, last_pass = manifest.markers()
    bench_ids = {e.id for e in manifest.entries if e.family == "bench"}
    assert (last_run | last_pass) & bench_ids <= set(kept)
    assert data["by_family"]["bench"]["total"] == len(bench_ids)
    assert data["by_family"]["bench"]["keep"] == len(kept)
    assert {d["id"] for d in data["delete"]} == bench_ids - set(kept)
    assert all(d["reasons"][0].startswith("beyond keep_last 1") for d in data["delete"])
    assert data["safety"]["pinned"] == 1


def test_pins_from_the_pins_file_hold_on_a_stale_manifest(tmp_path: Path) -> None:
    """A plan shown from a saved manifest (another writer holds the lock) that predates a
    pin must still keep the pinned run, whether the pin names its id or its run."""
    from artifacts_tasks.pins import pin_markers, run_marker

    manifest, config = sample_manifest(tmp_path)
    bench = sorted((e for e in manifest.entries if e.family == "bench"), key=lambda e: e.sort_key())
    by_id, by_run = bench[0], bench[1]
    assert not by_id.pinned and not by_run.pinned  # the manifest knows nothing of the pins
    pins = {
        by_id.id: {"pinned_at": "2025-09-06T00:00:00Z"},
        "ffffffff": {
            "pinned_at": "2025-09-06T00:00:00Z",
            "family": "bench",
            "directory": by_run.directory,
            "run_key": by_run.run_key,
        },
    }
    p = gc.plan(manifest, config, now=NOW, pins=pin_markers(pins))  # type: ignore[arg-type]
    deleted = {v.item.id for v in p.delete}
    assert by_id.id not in deleted and by_run.id not in deleted
    assert run_marker("bench", by_run.directory, by_run.run_key) in pin_markers(pins)
    assert p.safety_counts()["pinned"] == 2


# ---- explain --------------------------------------------------------------------------------


def test_explain_agrees_with_the_plan_for_every_run(tmp_path: Path) -> None:
    from .conftest import run_main

    root = tmp_path / "artifacts"
    generate(root, runs_per_family=15, seed=7)
    plan = json.loads(run_main("--root", root, "gc", "--json").out)
    verdicts = {d["id"]: (False, d["reasons"]) for d in plan["delete"]}
    verdicts |= {k["id"]: (True, k["reasons"]) for k in plan["keep"]}
    for run_id, (keep, reasons) in list(verdicts.items())[::7]:
        r = run_main("--root", root, "explain", "--id", run_id, "--json")
        assert r.code == 0, r
        doc = json.loads(r.out)
        assert (doc["keep"], doc["reasons"]) == (keep, reasons)
        assert doc["safety"]["last_run"] == ("last_run" in reasons)
        assert doc["safety"]["last_pass"] == ("last_pass" in reasons)
        rules = [r for r in reasons if r not in ("pinned", "last_run", "last_pass")]
        assert bool(doc["matches"]) == (keep and bool(rules))  # a deleted run matched none
        text = run_main("--root", root, "explain", "--id", run_id).out
        assert ("Verdict: kept" in text) == keep
        for reason in reasons:
            assert f"  - {reason}\n" in text


def test_explain_of_a_trashed_run_says_where_it_went(tmp_path: Path) -> None:
    from .conftest import run_main

    root = tmp_path / "artifacts"
    generate(root, runs_per_family=15, seed=7)
    doc = json.loads(run_main("--root", root, "gc", "--apply", "--force", "--json").out)
    gone = doc["applied"]["moved"][0]["id"]
    r = run_main("--root", root, "explain", "--id", gone)
    assert r.code == 2
    assert f"{gone} is in the trash" in r.err and f"restore --id {gone}" in r.err
    unknown = run_main("--root", root, "explain", "--id", "zzzz")
    assert unknown.code == 2 and "unknown id 'zzzz'" in unknown.err
