"""The projects the reliability sweeps work on: a small tree of two families, each
operation that writes (with what it needs done first), and the checks after recovery
that every sweep shares (test_crash_sweep.py, test_faults.py)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ..conftest import write
from . import harness
from .harness import run

CONFIG = """\
retention:
  bench: {keep: 2}
  greenwall: {keep: 1}
compaction:
  jsonl: {min_size_kb: 1}
  markdown: {min_size_kb: 0}
trash:
  retention_days: 30
"""
DAY = datetime(2025, 3, 1, tzinfo=UTC)


def _jsonl(i: int, status: str) -> str:
    """Over 1 KB, and so compacted, for runs 2 and 3 only."""
    n = 90 if i in (2, 3) else 3
    rows = [
        json.dumps({"step": k, "p99_ms": (k * 7 + i) % 97, "ep": f"/s/{k % 3}"}) for k in range(n)
    ]
    return "\n".join([*rows, json.dumps({"status": status.lower()})]) + "\n"


def _md(family: str, i: int, status: str) -> str:
    """Every file's bytes differ, so a file is only ever found where it really is."""
    if i == 1:  # compaction drops two empty sections and turns the title into `# ...`
        return f"{family} {i}\n======\n\n## Empty\n\n## Results\n\nStatus: {status}\n\n### None\n"
    return f"# {family} {i}\n\nStatus: {status}\n"


def build(root: Path) -> None:
    """Two families, a run of each alone in its own directory (gc empties it), one run with
    a compactable JSONL file and a Markdown file that loses two empty sections."""
    for i in range(5):
        when = DAY + timedelta(days=i)
        stamp = when.strftime("%Y%m%d_%H%M%S")
        base = "bench" if i % 2 else f"ci/{when:%Y%m%d}/bench"
        status = "PASS" if i in (1, 2) else "FAIL"
        write(root, f"{base}/run_{stamp}.md", _md("bench", i, status), mtime=when)
        write(root, f"{base}/run_{stamp}.jsonl", _jsonl(i, status), mtime=when)
    for i in range(3):
        when = DAY + timedelta(days=i, hours=5)
        write(root, f"greenwall/gw_{when:%Y%m%d_%H%M%S}.md", _md("gw", i, "PASS"), mtime=when)
    (root.parent / "config").mkdir(exist_ok=True)
    (root.parent / "config" / "artifacts.yaml").write_text(CONFIG)
    _ok(root, "scan")


def _ok(root: Path, *argv: str) -> str:
    done = run(root, *argv)
    assert done.code == 0, (argv, done.err)
    return done.out


def _ids(root: Path) -> list[str]:
    """Entry ids, newest first per family, as `list --json` gives them."""
    return [e["id"] for e in json.loads(_ok(root, "list", "--json"))["entries"]]


def _trash_records(root: Path) -> list[dict[str, object]]:
    return [json.loads(p.read_text()) for p in sorted((root / ".trash").glob("*/.record.json"))]


# ---- the operations: each makes its project ready and says what to run -------------------


def _scan(root: Path) -> list[str]:
    return ["scan"]


def _changes(root: Path) -> None:
    """What a scan has to find: a new run, an edit, a file gone."""
    write(root, "bench/run_20250310_000000.md", "Status: PASS\n")
    write(root, "greenwall/gw_20250301_050000.md", "Status: FAIL\n")
    next(root.glob("ci/*/bench/*.jsonl")).unlink()


def _pin(root: Path) -> list[str]:
    return ["pin", "--id", _ids(root)[-1], "--on"]


def _gc(root: Path) -> list[str]:
    _ok(root, "pin", "--id", _ids(root)[-1], "--on")
    return ["gc", "--apply", "--force"]


def _restore(root: Path) -> list[str]:
    _ok(root, "gc", "--apply", "--force")
    two = [r for r in _trash_records(root) if r["file_count"] == 2]
    return ["restore", "--id", str(two[0]["id"])]


def _purge(root: Path) -> list[str]:
    _ok(root, "gc", "--apply", "--force")
    for record in sorted((root / ".trash").glob("*/.record.json"))[:3]:
        doc = json.loads(record.read_text())
        doc["trashed_at"] = "2020-01-01T00:00:00Z"  # three folders past their retention
        record.write_text(json.dumps(doc))
    return ["trash", "purge"]


def _compact(root: Path) -> list[str]:
    return ["compact", "--apply"]


def _uncompact(root: Path) -> list[str]:
    _ok(root, "compact", "--apply")
    (record,) = [
        r
        for r in _trash_records(root)
        if r["files"][0]["path"] == "greenwall/gw_20250302_050000.md"  # type: ignore[index]
    ]
    return ["restore", "--id", str(record["id"])]


@dataclass(frozen=True)
class Operation:
    prepare: Callable[[Path], list[str]]
    whole: bool  # as before or as after as a whole; otherwise key by key
    touch: Callable[[Path], None] | None = None  # last, after the manifest is read


OPERATIONS = {
    "scan": Operation(_scan, whole=True, touch=_changes),
    "pin": Operation(_pin, whole=True),
    "gc --apply": Operation(_gc, whole=True),
    "restore": Operation(_restore, whole=True),
    "trash purge": Operation(_purge, whole=False),
    "compact --apply": Operation(_compact, whole=False),
    "restore of a compaction": Operation(_uncompact, whole=True),
}


@dataclass
class Case:
    root: Path
    argv: list[str]
    before: dict[str, str]
    held: dict[str, tuple[str, int]]
    protected: set[str]
    purgeable: set[str]


def prepare(where: Path, operation: Operation) -> Case:
    """The project as the operation finds it, with what must hold after any crash."""
    root = where / "artifacts"
    build(root)
    argv = operation.prepare(root)
    plan = json.loads(_ok(root, "gc", "--json"))
    paths = {e["id"]: e["paths"] for e in json.loads(_ok(root, "list", "--json"))["entries"]}
    safety = {"pinned", "last_pass", "last_run"}
    protected = {p for k in plan["keep"] if safety & set(k["reasons"]) for p in paths[k["id"]]}
    purgeable = set()
    if argv[:2] == ["trash", "purge"]:
        purgeable = {str(r["id"]) for r in _trash_records(root) if r["trashed_at"] < "2021"}
    if operation.touch is not None:
        operation.touch(root)
        protected = {p for p in protected if (root / p).exists()}
    return Case(root, argv, harness.state(root), harness.holdings(root), protected, purgeable)


def copy(pristine: Case, where: Path) -> Case:
    """A copy of the prepared project (copied files have new inodes, which the operation's
    first refresh of the manifest takes in its stride)."""
    root = where / "artifacts"
    shutil.copytree(pristine.root.parent, where, symlinks=True)
    return dataclasses.replace(pristine, root=root)


def check_recovered(case: Case, after: dict[str, str], whole: bool) -> dict[str, str]:
    root = case.root
    harness.assert_no_loss(root, case.held, case.purgeable)
    harness.assert_clean(root)
    missing = [p for p in case.protected if not (root / p).exists()]
    assert not missing, f"protected runs left their place: {missing}"
    now = harness.state(root)
    if whole:
        assert now in (case.before, after), "neither as before nor as after"
    else:
        for key in case.before.keys() | after.keys() | now.keys():
            assert now.get(key) in (case.before.get(key), after.get(key)), key
    return now


def finish(case: Case, after: dict[str, str]) -> None:
    """The operation run again completes it (a restore whose run is back has no more to do)."""
    if case.argv[0] != "restore" or harness.state(case.root) == case.before:
        done = run(case.root, *case.argv)
        assert done.code == 0, done.err
    assert harness.state(case.root) == after
    harness.assert_clean(case.root)
    verified = run(case.root, "verify")
    assert verified.code == 0, verified.out + verified.err
