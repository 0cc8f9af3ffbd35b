"""gc --apply, restore and the trash, as a user depends on them: what moves, what never
moves, what is refused, and that every refusal leaves the tree exactly as it was.

(The SIGKILL crash sweep of the journal protocol lives in test_crash.py.)
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import termios
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import xxhash

from artifacts_tasks import cli, gc
from artifacts_tasks._fs import root_lock
from artifacts_tasks.config import Config, load_config
from artifacts_tasks.errors import PlanValidationError
from artifacts_tasks.manifest import Entry, Manifest, load_manifest, now_utc
from artifacts_tasks.scan import refresh

from .conftest import BIN, REPO, Result, write
from .test_tasks import doit

# A family whose runs are directories (`ci/<...>/<run>/`), and bench with flat runs.
CONFIG = """\
families:
  ci:
    patterns: ["ci/**/*.md", "ci/**/*.json"]
retention:
  ci: {keep: 1}
  bench: {keep: 1}
"""
T0 = datetime(2025, 9, 6, 12, 0, 0, tzinfo=UTC)
TREE: dict[str, str] = {
    # ci: r3 is the newest run (kept); r2 and r1 are doomed.
    "ci/2025/r3/report_20250903_000000.md": "# CI\nStatus: PASS\n",
    "ci/2025/r3/data_20250903_000000.json": '{"status": "pass", "n": 3}\n',
    "ci/2025/r2/report_20250902_000000.md": "# CI\nStatus: FAIL\n",
    "ci/2025/r2/data_20250902_000000.json": '{"status": "fail", "n": 2}\n',
    "ci/2025/r2/notes.txt": "unmanaged: keeps its directory alive\n",
    "ci/old/r1/report_20250901_000000.md": "# CI\nStatus: PASS\n",
    "ci/old/r1/data_20250901_000000.json": '{"status": "pass", "n": 1}\n',
    # bench: 03 kept (last run and last pass), 02 and 01 doomed.
    "bench/b_20250903_000000.md": "# Bench\nStatus: PASS\n",
    "bench/b_20250902_000000.md": "# Bench\nStatus: FAIL\n",
    "bench/b_20250901_000000.md": "# Bench\nStatus: PASS\n",
    "bench/b_20250901_000000.jsonl": '{"p99": 1}\n{"status": "pass"}\n',
    # smoke90: one run, kept.
    "smoke90/backtest_20250901_000000.json": '{"status": "pass"}\n',
    "README.txt": "not an artifact\n",
}
DOOMED_DIRS = {"ci/2025/r2", "ci/old/r1"}
RECORD_SCHEMA = json.loads((REPO / "schemas" / "trash_record.schema.json").read_text())


# ---- helpers ---------------------------------------------------------------------------


@dataclass
class Project:
    root: Path
    config: Path

    def cli(self, *argv: str | Path, inp: io.StringIO | None = None) -> Result:
        """`cli.main` in-process on this root and config."""
        args = ["--root", str(self.root), "--config", str(self.config), "--no-progress"]
        out, err = io.StringIO(), io.StringIO()
        code = cli.main([*args, *map(str, argv)], out=out, err=err, inp=inp)
        return Result(code, out.getvalue(), err.getvalue())

    def console(self, *argv: str, stdin: Any = subprocess.DEVNULL) -> subprocess.Popen[str]:
        """The installed `cryptorun artifacts ...` as a real process (started, not awaited)."""
        common = ["--root", str(self.root), "--config", str(self.config), "--no-progress"]
        return subprocess.Popen(
            [str(BIN / "cryptorun"), "artifacts", *common, *argv],
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def gc_apply(self) -> dict[str, Any]:
        """`gc --apply --force --json`, which must succeed."""
        r = self.cli("gc", "--apply", "--force", "--json")
        assert r.code == 0, r
        doc: dict[str, Any] = json.loads(r.out)
        return doc

    def entries(self) -> dict[str, Entry]:
        m = load_manifest(self.root)
        assert m is not None
        return m.by_id()

    def config_obj(self) -> Config:
        return load_config(self.config)


def make_project(tmp_path: Path, files: Mapping[str, str] = TREE, config: str = CONFIG) -> Project:
    root = tmp_path / "artifacts"
    root.mkdir()
    for rel, text in files.items():
        write(root, rel, text, mtime=T0)
    path = tmp_path / "c.yaml"
    path.write_text(config)
    return Project(root, path)


@pytest.fixture
def proj(tmp_path: Path) -> Project:
    return make_project(tmp_path)


def xxh(data: bytes) -> str:
    return str(xxhash.xxh3_128_hexdigest(data))


def walk_files(top: Path) -> Iterator[tuple[str, Path]]:
    """(relative POSIX path, path) of every file and symlink below `top`, never following one."""
    for dirpath, dirnames, filenames in os.walk(top):
        here = Path(dirpath)
        links = [d for d in dirnames if (here / d).is_symlink()]
        for name in [*filenames, *links]:
            yield (here / name).relative_to(top).as_posix(), here / name


def artifacts(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file outside the tool's dot-files and dot-directories: bytes and mtime_ns."""
    found = {}
    for rel, path in walk_files(root):
        if any(part.startswith(".") for part in rel.split("/")):
            continue
        st = path.lstat()
        found[rel] = (path.read_bytes(), st.st_mtime_ns)
    return found


def everything(top: Path) -> dict[str, bytes | str]:
    """Every file below `top` (dot ones too) by bytes, a symlink by its target."""
    return {
        rel: f"-> {os.readlink(path)}" if path.is_symlink() else path.read_bytes()
        for rel, path in walk_files(top)
    }


def one_line(r: Result) -> str:
    assert r.err.count("\n") == 1 and r.err.endswith("\n"), r
    assert "Traceback" not in r.err
    return r.err


def records(root: Path) -> dict[str, dict[str, Any]]:
    """Trash folder -> its .record.json as stored."""
    trash = root / ".trash"
    if not trash.is_dir():
        return {}
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(trash.glob("*/.record.json"))}


def assert_nothing_lost(root: Path, originals: Mapping[str, bytes]) -> None:
    """Each original file is at its path, or in a trash folder whose record names it with
    its checksum; byte-identical either way."""
    recorded: dict[str, list[tuple[str, str]]] = {}
    for tid, rec in records(root).items():
        for f in rec["files"]:
            recorded.setdefault(f["path"], []).append((tid, f["xxh3_128"]))
    for rel, data in originals.items():
        here = root / rel
        if here.is_file() and here.read_bytes() == data:
            continue
        homes = [
            tid
            for tid, digest in recorded.get(rel, [])
            if digest == xxh(data) and (root / ".trash" / tid / rel).read_bytes() == data
        ]
        assert homes, f"{rel} is neither in place nor in the trash with its record"


def ids_by_path(proj: Project) -> dict[str, str]:
    """Each artifact path -> the id of its run (from a fresh `list --json`)."""
    r = proj.cli("list", "--json")
    assert r.code == 0, r
    return {p: e["id"] for e in json.loads(r.out)["entries"] for p in e["paths"]}


def fresh_plan(proj: Project) -> tuple[Manifest, Config, gc.GcPlan]:
    config = proj.config_obj()
    manifest = refresh(proj.root, config).manifest
    return manifest, config, gc.plan(manifest, config, now=now_utc(), dry_run=False)


def apply_directly(proj: Project, manifest: Manifest, config: Config, p: gc.GcPlan) -> gc.Applied:
    with root_lock(proj.root, "test"):
        return gc.apply(
            proj.root,
            p,
            manifest,
            config,
            refresh=lambda: refresh(proj.root, config, recover=False),
        )


def age_record(root: Path, trash_id: str, days: float) -> None:
    """Rewrite a record's trashed_at to `days` ago (what a month in the trash looks like)."""
    path = root / ".trash" / trash_id / ".record.json"
    rec = json.loads(path.read_text())
    when = datetime.now(UTC) - timedelta(days=days)
    rec["trashed_at"] = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    path.write_text(json.dumps(rec, indent=1) + "\n")


# ---- gc --apply: what moves, what stays ------------------------------------------------


def test_apply_moves_exactly_the_plans_delete_set_into_the_trash(proj: Project) -> None:
    root = proj.root
    dry = proj.cli("gc", "--json")
    assert dry.code == 0, dry
    plan = json.loads(dry.out)
    doomed = {d["id"]: d["reasons"] for d in plan["delete"]}
    run_of = ids_by_path(proj)
    doomed_paths = {p for p, i in run_of.items() if i in doomed}
    assert doomed_paths == {
        "ci/2025/r2/report_20250902_000000.md",
        "ci/2025/r2/data_20250902_000000.json",
        "ci/old/r1/report_20250901_000000.md",
        "ci/old/r1/data_20250901_000000.json",
        "bench/b_20250902_000000.md",
        "bench/b_20250901_000000.md",
        "bench/b_20250901_000000.jsonl",
    }
    before = artifacts(root)
    started = now_utc()

    doc = proj.gc_apply()
    assert doc["dry_run"] is False
    moved = {m["id"]: m["trash_id"] for m in doc["applied"]["moved"]}
    assert set(moved) == set(doomed)
    assert doc["skipped"] == []

    # Kept runs and unmanaged files: untouched, byte for byte and mtime.
    after = artifacts(root)
    assert after == {rel: v for rel, v in before.items() if rel not in doomed_paths}

    # Each doomed run: its files under .trash/<id>/ at their relative paths, and a record.
    recs = records(root)
    assert set(recs) == set(moved.values())
    for run_id, tid in moved.items():
        assert tid == run_id  # a first trashing takes the run's id as folder name
        rec = recs[tid]
        jsonschema.Draft202012Validator(RECORD_SCHEMA).validate(rec)
        assert rec["id"] == run_id
        assert rec["reasons"] == doomed[run_id]
        trashed_at = datetime.strptime(rec["trashed_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        assert started <= trashed_at <= now_utc()
        paths = {p for p, i in run_of.items() if i == run_id}
        assert {f["path"] for f in rec["files"]} == paths
        assert rec["file_count"] == len(paths)
        for f in rec["files"]:
            data, mtime_ns = before[f["path"]]
            in_trash = root / ".trash" / tid / f["path"]
            assert in_trash.read_bytes() == data
            assert (f["xxh3_128"], f["size"]) == (xxh(data), len(data))
            assert in_trash.stat().st_mtime_ns == mtime_ns  # moved by rename, not copied
        stored = {rel for rel, _ in walk_files(root / ".trash" / tid)}
        assert stored == paths | {".record.json"}

    # Emptied run directories are gone (and an emptied parent); others stay.
    assert not (root / "ci/old").exists()
    assert (root / "ci/2025/r2").is_dir()  # notes.txt is still in it
    assert sorted(os.listdir(root / "ci/2025/r2")) == ["notes.txt"]
    assert (root / "ci/2025/r3").is_dir() and (root / "bench").is_dir()

    # The report, in Markdown and JSON, names what moved.
    assert len(doc["applied"]["reports"]) == 2
    md = sorted((root / ".trash").glob("gc_report_*.md"))
    js = sorted((root / ".trash").glob("gc_report_*.json"))
    assert len(md) == 1 and len(js) == 1
    assert {f".trash/{md[0].name}", f".trash/{js[0].name}"} == set(doc["applied"]["reports"])
    report = json.loads(js[0].read_text())
    assert {m["id"] for m in report["applied"]["moved"]} == set(doomed)
    for run_id in doomed:
        assert run_id in md[0].read_text()

    # The manifest agrees with the tree, and a second apply finds nothing to do.
    assert set(proj.entries()) == {i for i in set(run_of.values()) if i not in doomed}
    verified = proj.cli("verify")
    assert verified.code == 0, verified
    trash_before = everything(root / ".trash")
    again = proj.gc_apply()
    assert again["delete"] == [] and again["applied"]["moved"] == []
    assert everything(root / ".trash") == trash_before
    assert artifacts(root) == after


def test_a_root_level_run_never_removes_the_root(tmp_path: Path) -> None:
    config = "families:\n  top:\n    patterns: ['*.md']\nretention:\n  top: {keep: 1}\n"
    files = {"a_20250901_000000.md": "Status: PASS\n", "a_20250902_000000.md": "Status: PASS\n"}
    proj = make_project(tmp_path, files, config)
    doc = proj.gc_apply()
    assert len(doc["applied"]["moved"]) == 1
    assert proj.root.is_dir()
    assert (proj.root / "a_20250902_000000.md").is_file()
    assert not (proj.root / "a_20250901_000000.md").exists()


# ---- confirmation ----------------------------------------------------------------------


def test_apply_without_a_terminal_and_without_force_touches_nothing(proj: Project) -> None:
    before = everything(proj.root)
    proc = proj.console("gc", "--apply")
    out, err = proc.communicate(timeout=60)
    r = Result(proc.returncode, out, err)
    assert r.code == 2
    assert "not a terminal" in one_line(r) and "--force" in r.err
    assert everything(proj.root) == before  # not even a lock or a manifest
    # In-process, an answer on a stdin that is not a terminal is not a confirmation either.
    piped = proj.cli("gc", "--apply", inp=io.StringIO("y\n"))
    assert piped.code == 2
    assert everything(proj.root) == before


def run_on_terminal(proj: Project, answer: bytes, *argv: str) -> Result:
    """The console script with a real pty as stdin, answering `answer` to its question."""
    master, slave = os.openpty()
    try:
        proc = proj.console(*argv, stdin=slave)
        os.close(slave)
        slave = -1
        os.write(master, answer)
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    return Result(proc.returncode, out, err)


def test_on_a_terminal_n_changes_nothing_and_y_applies(proj: Project) -> None:
    before = artifacts(proj.root)
    no = run_on_terminal(proj, b"n\n", "gc", "--apply")
    assert no.code == 0, no
    assert "[y/N]" in no.out
    assert "Nothing was changed." in no.out
    assert artifacts(proj.root) == before
    assert not (proj.root / ".trash").exists()

    yes = run_on_terminal(proj, b"y\n", "gc", "--apply")
    assert yes.code == 0, yes
    assert "Moved 4 runs (7 files" in yes.out
    assert len(records(proj.root)) == 4
    assert len(artifacts(proj.root)) == len(before) - 7


@pytest.mark.parametrize(
    "argv",
    [["gc", "--apply", "--dry-run"], ["gc", "--apply", "--dry-run", "--force"], ["gc", "--force"]],
)
def test_contradictory_flags_are_usage_errors(proj: Project, argv: list[str]) -> None:
    before = everything(proj.root)
    r = proj.cli(*argv)
    assert r.code == 2
    one_line(r)
    assert everything(proj.root) == before


# ---- plan validation ---------------------------------------------------------------------


def forge(p: gc.GcPlan, run_id: str, **changes: Any) -> gc.GcPlan:
    """The plan with one verdict changed (as a bug in the policy might change it)."""
    return gc.GcPlan(
        p.now,
        p.dry_run,
        {
            fam: [v._replace(**changes) if v.item.id == run_id else v for v in verdicts]
            for fam, verdicts in p.by_family.items()
        },
    )


@pytest.mark.parametrize("rule", ["last_run", "last_pass", "pinned"])
def test_validation_refuses_a_protected_run_in_the_delete_set(tmp_path: Path, rule: str) -> None:
    files = {
        "bench/b_20250903_000000.md": "Status: FAIL\n",  # last run, not a pass
        "bench/b_20250902_000000.md": "Status: PASS\n",  # last pass
        "bench/b_20250901_000000.md": "Status: PASS\n",
    }
    proj = make_project(tmp_path, files, "retention:\n  bench: {keep: 1}\n")
    by_path = ids_by_path(proj)
    target = {
        "last_run": by_path["bench/b_20250903_000000.md"],
        "last_pass": by_path["bench/b_20250902_000000.md"],
        "pinned": by_path["bench/b_20250901_000000.md"],
    }[rule]
    if rule == "pinned":
        assert proj.cli("pin", "--id", target, "--on").code == 0
    manifest, config, p = fresh_plan(proj)
    assert target not in {v.item.id for v in p.delete}
    # The reasons say nothing of the safety rule: validation must read the manifest itself.
    bad = forge(p, target, keep=False, reasons=("beyond keep_last 1 (rank 9)",))
    with pytest.raises(PlanValidationError) as caught:
        gc.validate(bad, manifest, config, pins=())
    message = str(caught.value)
    assert message.startswith("GC plan validation failed:")
    assert target in message and rule in message
    # And apply refuses it before anything moves.
    before = artifacts(proj.root)
    with pytest.raises(PlanValidationError):
        apply_directly(proj, manifest, config, bad)
    assert artifacts(proj.root) == before
    assert not (proj.root / ".trash").exists()


@pytest.mark.parametrize(
    "path",
    ["../outside.md", "/etc/passwd", "bench/../../outside.md", "other/b_20250901_000000.md"],
)
def test_validation_refuses_a_path_outside_the_run(proj: Project, path: str) -> None:
    manifest, config, p = fresh_plan(proj)
    victim = next(v for v in p.delete if v.item.family == "bench")
    files = (victim.item.files[0]._replace(path=path), *victim.item.files[1:])
    bad = forge(p, victim.item.id, item=victim.item._replace(files=files))
    with pytest.raises(PlanValidationError) as caught:
        gc.validate(bad, manifest, config, pins=())
    assert str(caught.value).startswith("GC plan validation failed:")
    assert repr(path) in str(caught.value)
    before = artifacts(proj.root)
    with pytest.raises(PlanValidationError):
        apply_directly(proj, manifest, config, bad)
    assert artifacts(proj.root) == before


# ---- files changed or vanished since the scan --------------------------------------------


def test_runs_changed_or_vanished_since_the_scan_are_skipped(tmp_path: Path) -> None:
    files = {}
    for day in range(1, 6):
        files[f"bench/b_2025090{day}_000000.md"] = f"# Bench {day}\nStatus: PASS\n"
        files[f"bench/b_2025090{day}_000000.jsonl"] = f'{{"day": {day}, "status": "pass"}}\n'
    proj = make_project(tmp_path, files, "retention:\n  bench: {keep: 1}\n")
    root = proj.root
    manifest, config, p = fresh_plan(proj)
    by_path = ids_by_path(proj)
    run = {day: by_path[f"bench/b_2025090{day}_000000.md"] for day in range(1, 6)}
    assert {v.item.id for v in p.delete} == {run[d] for d in (1, 2, 3, 4)}

    grown = root / "bench/b_20250904_000000.md"
    grown.write_text(grown.read_text() + "more\n")  # size and mtime changed
    touched = root / "bench/b_20250903_000000.md"
    os.utime(touched, (T0.timestamp() + 1, T0.timestamp() + 1))  # mtime only
    (root / "bench/b_20250902_000000.jsonl").unlink()  # vanished
    before = artifacts(root)

    applied = apply_directly(proj, manifest, config, p)

    assert [v.item.id for v, _ in applied.moved] == [run[1]]
    reasons = {s["id"]: s["reason"] for s in applied.skipped}
    assert set(reasons) == {run[2], run[3], run[4]}
    assert "bench/b_20250902_000000.jsonl vanished since the scan" in reasons[run[2]]
    assert "bench/b_20250903_000000.md changed since the scan" in reasons[run[3]]
    assert "bench/b_20250904_000000.md changed since the scan" in reasons[run[4]]
    # The skipped runs are left exactly as they are now; only run 1 moved.
    moved_paths = {"bench/b_20250901_000000.md", "bench/b_20250901_000000.jsonl"}
    assert artifacts(root) == {k: v for k, v in before.items() if k not in moved_paths}
    assert set(records(root)) == {run[1]}
    report = json.loads(next((root / ".trash").glob("gc_report_*.json")).read_text())
    assert {s["id"] for s in report["skipped"]} == set(reasons)
    # The manifest was refreshed to the tree as it now is.
    assert set(proj.entries()) == {run[2], run[3], run[4], run[5]}
    assert proj.cli("verify").code == 0


def test_a_run_directory_swapped_for_a_symlink_is_skipped(tmp_path: Path) -> None:
    files = {f"ci/r{n}/report_2025090{n}_000000.md": f"# CI {n}\nStatus: PASS\n" for n in (1, 2, 3)}
    proj = make_project(tmp_path, files)
    root = proj.root
    manifest, config, p = fresh_plan(proj)
    by_path = ids_by_path(proj)
    r1, r2 = by_path["ci/r1/report_20250901_000000.md"], by_path["ci/r2/report_20250902_000000.md"]
    assert {v.item.id for v in p.delete} == {r1, r2}
    # After the scan, r1 moves out of the root (same names, sizes, mtimes) and a symlink
    # takes its place: following it would pass every check and move files from outside.
    outside = tmp_path / "elsewhere"
    os.rename(root / "ci/r1", outside)
    os.symlink(outside, root / "ci/r1")
    outside_before = everything(outside)

    applied = apply_directly(proj, manifest, config, p)

    assert [v.item.id for v, _ in applied.moved] == [r2]
    (skip,) = applied.skipped
    assert skip["id"] == r1 and "symlink" in skip["reason"]
    assert everything(outside) == outside_before
    assert (root / "ci/r1").is_symlink()
    assert not (root / ".trash" / r1).exists()


# ---- hostile input -----------------------------------------------------------------------


def forge_manifest(root: Path, old: str, new: str, *, intact_header: bool) -> None:
    """Rewrite one path in the manifest; with `intact_header` the body checksum in the
    header is recomputed, so the file looks exactly as the tool wrote it."""
    raw = (root / ".manifest.json").read_bytes()
    head, _, body = raw.partition(b"\n")
    assert json.dumps(old).encode() in body
    body = body.replace(json.dumps(old).encode(), json.dumps(new).encode())
    if intact_header:
        header = json.loads(head + b"]}")
        header["body_xxh3_128"] = xxh(body)
        head = json.dumps(header, separators=(",", ":"))[:-2].encode()
    (root / ".manifest.json").write_bytes(head + b"\n" + body)


@pytest.mark.parametrize("intact_header", [True, False], ids=["intact-header", "edited"])
@pytest.mark.parametrize("hostile", ["../b_20250901_000000.md", "ABS"], ids=["dotdot", "abs"])
def test_a_hostile_manifest_is_refused_before_anything_moves(
    proj: Project, tmp_path: Path, hostile: str, intact_header: bool
) -> None:
    root = proj.root
    decoy = tmp_path / "b_20250901_000000.md"
    decoy.write_text("precious, outside the root\n")
    if hostile == "ABS":
        hostile = str(decoy)
    assert proj.cli("scan").code == 0
    forge_manifest(root, "bench/b_20250901_000000.md", hostile, intact_header=intact_header)
    before = artifacts(root)

    r = proj.cli("gc", "--apply", "--force")

    assert r.code == 2, r
    assert ".manifest.json" in one_line(r)
    assert artifacts(root) == before
    assert not (root / ".trash").exists()
    assert decoy.read_text() == "precious, outside the root\n"


def test_restore_of_a_path_like_id_is_refused(proj: Project) -> None:
    root = proj.root
    proj.gc_apply()
    # A decoy a naive `.trash/../x` join would find: a copy of a real trash folder.
    tid = next(iter(records(root)))
    shutil.copytree(root / ".trash" / tid, root / "x")
    assert proj.cli("scan").code == 0  # the decoy's files are artifacts of their own now
    before = everything(root)
    for wanted in ("../x", "..", ".", "/x", f"{tid}/../{tid}"):
        r = proj.cli("restore", "--id", wanted)
        assert r.code == 2, (wanted, r)
        one_line(r)
        assert everything(root) == before


def test_a_record_naming_a_path_outside_the_root_is_refused(proj: Project, tmp_path: Path) -> None:
    root = proj.root
    doc = proj.gc_apply()
    tid = next(m["trash_id"] for m in doc["applied"]["moved"] if m["file_count"] == 1)
    record = root / ".trash" / tid / ".record.json"
    rec = json.loads(record.read_text())
    # The file sits where a naive join of the hostile path would look for it.
    trashed = root / ".trash" / tid / rec["files"][0]["path"]
    (root / ".trash" / "outside.md").write_bytes(trashed.read_bytes())
    for hostile in ("../outside.md", "../../etc/x"):
        rec["files"][0]["path"] = hostile
        record.write_text(json.dumps(rec))
        before = everything(root)
        for wanted in (tid, rec["id"]):
            r = proj.cli("restore", "--id", wanted)
            assert r.code != 0, r
            one_line(r)
            assert everything(root) == before
        assert not (tmp_path / "outside.md").exists()
        assert not (tmp_path.parent / "etc" / "x").exists()


def test_a_trash_that_is_a_symlink_is_refused_by_gc_apply(proj: Project, tmp_path: Path) -> None:
    root = proj.root
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    os.symlink(outside, root / ".trash")
    before = artifacts(root)
    r = proj.cli("gc", "--apply", "--force")
    assert r.code == 2, r
    assert ".trash is not a directory" in one_line(r)
    assert artifacts(root) == before
    assert list(outside.iterdir()) == []


def outside_trash(tmp_path: Path, root: Path) -> Path:
    """A directory outside the root holding what looks like an old trash folder and a
    half-purged one, with `root/.trash` a symlink to it."""
    outside = tmp_path / "elsewhere"
    write(outside, "0123abcd/bench/b_20240101_000000.md", "someone else's file\n")
    record = {
        "format": "artifacts_tasks.trash_record",
        "version": 1,
        "id": "0123abcd",
        "family": "bench",
        "directory": "bench",
        "run_key": "20240101T000000Z",
        "timestamp": "2024-01-01T00:00:00Z",
        "status": "pass",
        "trashed_at": "2024-01-02T00:00:00Z",
        "operation": "gc",
        "reasons": ["beyond keep_last 1 (rank 2)"],
        "size": 20,
        "file_count": 1,
        "files": [
            {
                "path": "bench/b_20240101_000000.md",
                "size": 20,
                "mtime_ns": 0,
                "xxh3_128": xxh(b"someone else's file\n"),
            }
        ],
    }
    write(outside, "0123abcd/.record.json", json.dumps(record))
    write(outside, ".purge-0badc0de/precious.txt", "not the tool's to remove\n")
    os.symlink(outside, root / ".trash")
    return outside


@pytest.mark.parametrize("command", [["scan"], ["gc", "--apply", "--force"]])
def test_a_trash_symlink_never_leads_a_writer_outside_the_root(
    proj: Project, tmp_path: Path, command: list[str]
) -> None:
    outside = outside_trash(tmp_path, proj.root)
    before = everything(outside)
    proj.cli(*command)
    assert everything(outside) == before


def test_trash_purge_never_follows_a_trash_symlink(proj: Project, tmp_path: Path) -> None:
    outside = outside_trash(tmp_path, proj.root)
    (outside / ".purge-0badc0de").rename(tmp_path / "aside")  # only the purge itself here
    before = everything(outside)
    r = proj.cli("trash", "purge")
    assert everything(outside) == before
    assert r.code != 0 or "0123abcd" not in r.out


# ---- another file system, another writer -------------------------------------------------


def test_a_trash_on_another_file_system_is_refused(proj: Project) -> None:
    root = proj.root
    if shutil.which("mount") is None or shutil.which("umount") is None:
        pytest.skip("mount(8) is not installed")
    assert proj.cli("scan").code == 0
    (root / ".trash").mkdir()
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(root / ".trash")],
        capture_output=True,
        text=True,
    )
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.strip()}")
    try:
        before = artifacts(root)
        sums = {rel: xxh(data) for rel, (data, _) in before.items()}
        r = proj.cli("gc", "--apply", "--force")
        assert r.code == 1, r
        assert "another file system" in one_line(r)
        assert artifacts(root) == before
        assert {rel: xxh(data) for rel, (data, _) in artifacts(root).items()} == sums
        assert os.listdir(root / ".trash") == []
        assert not (root / ".journal.json").exists()
    finally:
        subprocess.run(["umount", str(root / ".trash")], check=True)


HOLD_LOCK = """\
import sys, time
from pathlib import Path
from artifacts_tasks._fs import root_lock
with root_lock(Path(sys.argv[1]), "a test holding the lock"):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_a_second_writer_exits_4_naming_the_holder_and_moves_nothing(proj: Project) -> None:
    assert proj.cli("scan").code == 0
    before = artifacts(proj.root)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(proj.root)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        r = proj.cli("gc", "--apply", "--force")
        assert r.code == 4, r
        assert f"pid {holder.pid} on " in one_line(r)
        assert "a test holding the lock" in r.err
    finally:
        holder.kill()
        holder.wait(timeout=10)
    assert artifacts(proj.root) == before
    assert not (proj.root / ".trash").exists()


def test_two_concurrent_applies_lose_nothing(tmp_path: Path) -> None:
    files = {
        f"bench/b_202508{d:02d}_{h:02d}0000.md": f"# Bench {d}/{h}\nStatus: PASS\n"
        for d in range(1, 21)
        for h in range(3)
    }
    proj = make_project(tmp_path, files, "retention:\n  bench: {keep: 1}\n")
    dry = proj.cli("gc", "--json")
    doomed = {d["id"] for d in json.loads(dry.out)["delete"]}
    assert len(doomed) == 59
    originals = {rel: data for rel, (data, _) in artifacts(proj.root).items()}

    procs = [proj.console("gc", "--apply", "--force", "--json") for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in procs]
    results = [Result(p.returncode, *o) for p, o in zip(procs, outputs, strict=True)]

    codes = sorted(r.code for r in results)
    assert codes in ([0, 0], [0, 4]), results
    moved: list[str] = []
    for r in results:
        if r.code == 4:
            assert "another writer holds" in one_line(r)
        else:
            moved += [m["id"] for m in json.loads(r.out)["applied"]["moved"]]
    assert sorted(moved) == sorted(doomed)  # each run moved once, by one of them
    assert_nothing_lost(proj.root, originals)
    assert len(artifacts(proj.root)) == 1
    assert proj.cli("verify").code == 0


# ---- restore -----------------------------------------------------------------------------


def test_restore_puts_a_run_back_byte_identical_with_its_id(proj: Project) -> None:
    root = proj.root
    before = artifacts(root)
    run_of = ids_by_path(proj)
    target = run_of["ci/old/r1/report_20250901_000000.md"]
    proj.gc_apply()
    assert target not in proj.entries()

    r = proj.cli("restore", "--id", target)

    assert r.code == 0, r
    assert r.out.startswith(f"Restored {target} (ci, ")
    restored = {p for p, i in run_of.items() if i == target}
    for rel in restored:
        assert artifacts(root)[rel] == before[rel]  # bytes and mtime
    entry = proj.entries()[target]
    assert {f.path for f in entry.files} == restored
    assert {f.xxh3_128 for f in entry.files} == {xxh(before[p][0]) for p in restored}
    assert not (root / ".trash" / target).exists()
    assert proj.cli("verify").code == 0
    listed = json.loads(proj.cli("trash", "list", "--json").out)
    assert target not in {i["trash_id"] for i in listed["items"]}


def test_restore_refuses_to_overwrite_and_moves_nothing(proj: Project) -> None:
    root = proj.root
    run_of = ids_by_path(proj)
    target = run_of["bench/b_20250901_000000.md"]  # two files: .md and .jsonl
    proj.gc_apply()
    squatter = write(root, "bench/b_20250901_000000.jsonl", "a new file, someone's work\n")
    assert proj.cli("scan").code == 0  # the newcomer is a run of its own
    before = everything(root)

    r = proj.cli("restore", "--id", target)

    assert r.code == 1, r
    assert "refusing to overwrite bench/b_20250901_000000.jsonl" in one_line(r)
    assert everything(root) == before  # the .md did not come back alone either
    assert squatter.read_text() == "a new file, someone's work\n"


def test_restore_refuses_a_trashed_file_that_differs_from_its_record(proj: Project) -> None:
    root = proj.root
    target = ids_by_path(proj)["bench/b_20250902_000000.md"]
    proj.gc_apply()
    trashed = root / ".trash" / target / "bench/b_20250902_000000.md"
    data = trashed.read_bytes()
    trashed.write_bytes(data.replace(b"FAIL", b"PASS"))  # same size, other bytes
    before = everything(root)

    r = proj.cli("restore", "--id", target)

    assert r.code == 1, r
    assert "differs from its recorded checksum" in one_line(r)
    assert everything(root) == before
    assert not (root / "bench/b_20250902_000000.md").exists()


def trash_twice(proj: Project) -> tuple[str, bytes]:
    """The run bench/b_20250902 trashed, regenerated with new bytes, and trashed again."""
    root = proj.root
    target = ids_by_path(proj)["bench/b_20250902_000000.md"]
    proj.gc_apply()
    write(root, "bench/b_20250902_000000.md", "# Bench, rerun\nStatus: PASS\n", mtime=T0)
    second = proj.gc_apply()
    assert [m["trash_id"] for m in second["applied"]["moved"]] == [f"{target}.2"]
    return target, b"# Bench, rerun\nStatus: PASS\n"


def test_a_run_trashed_twice_is_restored_by_its_folder_name(proj: Project) -> None:
    target, rerun = trash_twice(proj)
    r = proj.cli("restore", "--id", f"{target}.2")
    assert r.code == 0, r
    assert (proj.root / "bench/b_20250902_000000.md").read_bytes() == rerun
    assert not (proj.root / ".trash" / f"{target}.2").exists()
    assert (proj.root / ".trash" / target / ".record.json").is_file()  # the first copy stays
    assert target in proj.entries()


def test_a_run_trashed_twice_is_ambiguous_by_its_run_id(proj: Project) -> None:
    target, _ = trash_twice(proj)
    before = everything(proj.root)
    r = proj.cli("restore", "--id", target)
    assert r.code == 2, r
    assert target in one_line(r) and f"{target}.2" in r.err
    assert everything(proj.root) == before


# ---- trash list and purge ----------------------------------------------------------------


def test_trash_list_shows_records_and_folders_without_one(proj: Project) -> None:
    root = proj.root
    doc = proj.gc_apply()
    moved = {m["trash_id"]: m for m in doc["applied"]["moved"]}
    write(root, ".trash/deadbeef/bench/b_20240101_000000.md", "no record with me\n")
    write(root, ".trash/cafebabe/.record.json", '{"format": "artifacts_tasks.trash_rec')

    table = proj.cli("trash", "list")
    assert table.code == 0, table
    lines = table.out.splitlines()
    assert lines[0].split() == [
        "TRASH",
        "ID",
        "FAMILY",
        "RUN",
        "TIMESTAMP",
        "TRASHED",
        "SIZE",
        "FILES",
        "PURGE",
    ]
    for tid, m in moved.items():
        (row,) = [line for line in lines if line.startswith(tid)]
        assert row.split()[1] == m["family"]
        # FILES, then PURGE: due 30 days after the trashing, which was just now.
        assert re.search(rf" {m['file_count']} +in (29d 23h|30d 0h)$", row), row
    (bare,) = [line for line in lines if line.startswith("deadbeef")]
    assert "no usable record, never purged" in bare and ".record.json is missing" in bare
    (broken,) = [line for line in lines if line.startswith("cafebabe")]
    assert "no usable record, never purged" in broken and "not valid JSON" in broken
    assert "6 folders" in table.out

    listed = json.loads(proj.cli("trash", "list", "--json").out)
    assert listed["retention_days"] == 30
    items = {i["trash_id"]: i for i in listed["items"]}
    assert set(items) == set(moved) | {"deadbeef", "cafebabe"}
    for tid, m in moved.items():
        stored = json.loads((root / ".trash" / tid / ".record.json").read_text())
        assert items[tid]["record"] == stored
        assert items[tid]["size"] == m["size"] and items[tid]["problem"] is None
    assert items["deadbeef"]["record"] is None and items["deadbeef"]["problem"]
    assert items["deadbeef"]["size"] == len("no record with me\n")
    assert listed["reports"] == sorted(p.name for p in (root / ".trash").glob("gc_report_*"))


def test_trash_age_counts_from_the_record_never_from_mtimes(proj: Project) -> None:
    root = proj.root
    doc = proj.gc_apply()
    tids = sorted(m["trash_id"] for m in doc["applied"]["moved"])
    old, older, fresh, aged_mtimes = tids
    write(root, ".trash/deadbeef/bench/b_20240101_000000.md", "no record with me\n")
    # Files and folders a year old by mtime: still trashed just now by their records.
    year_ago = (datetime.now(UTC) - timedelta(days=365)).timestamp()
    for top in (root / ".trash" / aged_mtimes, root / ".trash" / "deadbeef"):
        for dirpath, _dirs, names in os.walk(top):
            for name in names:
                os.utime(Path(dirpath) / name, (year_ago, year_ago))
            os.utime(dirpath, (year_ago, year_ago))

    nothing = proj.cli("trash", "purge")
    assert nothing.code == 0, nothing
    assert nothing.out.startswith("Nothing in the trash was trashed more than 30d ago")
    assert set(records(root)) == set(tids)

    age_record(root, old, days=40)
    purged = proj.cli("trash", "purge")
    assert purged.code == 0, purged
    assert f": {old}" in purged.out
    assert not (root / ".trash" / old).exists()
    assert set(records(root)) == {older, fresh, aged_mtimes}

    # --older-than: by the record too; the folder without a record is never purged.
    age_record(root, older, days=2)
    short = proj.cli("trash", "purge", "--older-than", "1d")
    assert short.code == 0, short
    assert set(records(root)) == {fresh, aged_mtimes}
    assert (root / ".trash/deadbeef/bench/b_20240101_000000.md").is_file()
    everything_gone = proj.cli("trash", "purge", "--older-than", "0h")
    assert everything_gone.code == 0
    assert set(records(root)) == set()
    assert (root / ".trash/deadbeef/bench/b_20240101_000000.md").is_file()


def test_gc_apply_purges_what_its_record_says_expired(proj: Project) -> None:
    root = proj.root
    doc = proj.gc_apply()
    expired, kept, *_ = sorted(m["trash_id"] for m in doc["applied"]["moved"])
    age_record(root, expired, days=40)
    age_record(root, kept, days=29)
    year_ago = (datetime.now(UTC) - timedelta(days=365)).timestamp()
    for _rel, path in walk_files(root / ".trash" / kept):
        os.utime(path, (year_ago, year_ago))  # old by mtime, not by its record
    write(root, ".trash/deadbeef/bench/b_20240101_000000.md", "no record with me\n")

    again = proj.gc_apply()  # nothing to delete, but something to purge

    assert again["applied"]["moved"] == []
    assert [p["trash_id"] for p in again["applied"]["purged"]] == [expired]
    assert not (root / ".trash" / expired).exists()
    assert (root / ".trash" / kept / ".record.json").is_file()
    assert (root / ".trash/deadbeef/bench/b_20240101_000000.md").is_file()


@pytest.mark.parametrize(
    "bad",
    [
        "bad",
        "30",
        "7w",
        "-1d",
        "",
    ],
)
def test_purge_with_a_bad_duration_is_a_usage_error(proj: Project, bad: str) -> None:
    proj.gc_apply()
    for tid in records(proj.root):
        age_record(proj.root, tid, days=400)
    before = everything(proj.root)
    r = proj.cli("trash", "purge", "--older-than", bad)
    assert r.code == 2, r
    one_line(r)
    assert everything(proj.root) == before


# ---- doit ----------------------------------------------------------------------------------


DODO = """\
import os
from pathlib import Path

from artifacts_tasks.tasks import make_tasks

DOIT_CONFIG = {"dep_file": ".doit.json", "backend": "json"}

globals().update(make_tasks(root="out/arts", config="cfg.yaml", after=["verify"]))


def _verify():
    if os.environ.get("VERIFY_WRITES", "1") == "0":
        return
    Path("out/arts/bench/b_20250910_000000.md").write_text("# Bench\\nStatus: PASS\\n")
    print("verify wrote a run")


def task_verify():
    return {"actions": [_verify], "verbosity": 2}
"""


def doit_project(tmp_path: Path, config: str) -> Path:
    base = tmp_path / "proj"
    base.mkdir()
    (base / "dodo.py").write_text(DODO)
    (base / "cfg.yaml").write_text(config)
    for day in (1, 2, 3):
        write(base / "out/arts", f"bench/b_2025090{day}_000000.md", "Status: PASS\n", mtime=T0)
    return base


@pytest.mark.parametrize(
    "argv",
    [["verify", "gc_apply"], ["gc_apply"]],
    ids=["chained-on-the-command-line", "after-verify-declared"],
)
def test_doit_gc_apply_applies_after_the_projects_verify(tmp_path: Path, argv: list[str]) -> None:
    base = doit_project(tmp_path, "retention:\n  bench: {keep: 1}\n")
    root = base / "out/arts"

    r = doit(base, *argv)

    assert r.code == 0, r
    lines = r.out.splitlines()
    assert lines.index(".  verify") < lines.index(".  gc_apply"), r
    assert "Moved 3 runs" in r.out
    # verify's run was there before the plan: it is the one kept, the other three moved.
    assert sorted(artifacts(root)) == ["bench/b_20250910_000000.md"]
    trashed = {f["path"] for rec in records(root).values() for f in rec["files"]}
    assert trashed == {f"bench/b_2025090{day}_000000.md" for day in (1, 2, 3)}
    assert len(list((root / ".trash").glob("gc_report_*.json"))) == 1


def test_doit_gc_apply_with_a_bad_config_fails_before_anything_moves(tmp_path: Path) -> None:
    base = doit_project(tmp_path, "retention:\n  bench: {keep: 1, kepe_daily: 3}\n")
    root = base / "out/arts"
    before = everything(root)

    r = doit(base, "gc_apply", env={"VERIFY_WRITES": "0"})

    assert r.code != 0, r
    assert "config error: cfg.yaml" in r.out + r.err
    assert "kepe_daily" in r.out + r.err
    assert "Traceback" not in r.out + r.err
    assert everything(root) == before


# ---- found by review: races, copies, odd records, odd journals --------------------------


def test_a_file_replaced_after_the_check_is_put_back_and_its_run_skipped(
    proj: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run's file swapped (same size, new inode) between the check and the move."""
    manifest, config, p = fresh_plan(proj)
    doomed = {v.item.id for v in p.delete}
    target = proj.root / "bench/b_20250902_000000.md"
    new = b"# Bench\nStatus: PASX\n"
    assert len(new) == target.stat().st_size
    from artifacts_tasks import trash

    real = trash.write_journal

    def journal_then_replace(root: Path, journal: Any) -> None:
        real(root, journal)
        aside = target.with_name("swap.tmp")
        aside.write_bytes(new)
        os.utime(aside, ns=(target.stat().st_mtime_ns,) * 2)
        os.replace(aside, target)  # same size and mtime: only the inode tells

    monkeypatch.setattr(trash, "write_journal", journal_then_replace)
    applied = apply_directly(proj, manifest, config, p)
    skipped = {s["id"]: s["reason"] for s in applied.skipped}
    bench_id = ids_by_path(proj)["bench/b_20250902_000000.md"]
    assert "changed while gc was moving" in skipped[bench_id]
    assert target.read_bytes() == new
    assert not (proj.root / ".trash" / bench_id).exists()
    assert {v.item.id for v, _ in applied.moved} == doomed - {bench_id}
    assert proj.cli("verify").code == 0


def test_restore_never_overwrites_a_file_that_appears_while_it_checks(
    proj: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    moved = proj.gc_apply()["applied"]["moved"]
    tid = next(m["trash_id"] for m in moved if m["family"] == "bench" and m["file_count"] == 2)
    rec = records(proj.root)[tid]
    late = proj.root / rec["files"][-1]["path"]
    from artifacts_tasks import trash

    real = trash._xxh3

    def hash_then_write(root: Path, rel: str) -> str:
        late.write_text("written by someone else meanwhile\n")
        return real(root, rel)

    monkeypatch.setattr(trash, "_xxh3", hash_then_write)
    before = everything(proj.root / ".trash" / tid)
    r = proj.cli("restore", "--id", tid)
    assert r.code == 1 and "refusing to overwrite" in one_line(r)
    assert late.read_text() == "written by someone else meanwhile\n"
    assert everything(proj.root / ".trash" / tid) == before
    assert not (proj.root / ".journal.json").exists()


def test_the_link_fallback_also_refuses_to_overwrite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where renameat2 is missing, link+unlink keeps the no-overwrite promise."""
    from artifacts_tasks import _fs

    monkeypatch.setattr(_fs, "_libc", lambda: object())
    (tmp_path / "a").write_text("a")
    (tmp_path / "b").write_text("b")
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        with pytest.raises(FileExistsError):
            _fs.rename_noreplace("a", "b", src_dir_fd=fd, dst_dir_fd=fd)
        _fs.rename_noreplace("a", "c", src_dir_fd=fd, dst_dir_fd=fd)
    finally:
        os.close(fd)
    assert sorted(os.listdir(tmp_path)) == ["b", "c"]
    assert (tmp_path / "b").read_text() == "b" and (tmp_path / "c").read_text() == "a"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("trashed_at", "2025-02-30T00:00:00Z"),
        ("trashed_at", "9999-12-31T00:00:00Z"),
        ("timestamp", "2025-00-10T00:00:00Z"),
    ],
)
def test_a_record_with_an_impossible_date_is_a_folder_without_a_usable_record(
    proj: Project, key: str, value: str
) -> None:
    moved = proj.gc_apply()["applied"]["moved"]
    tid = moved[0]["trash_id"]
    path = proj.root / ".trash" / tid / ".record.json"
    rec = json.loads(path.read_text())
    rec[key] = value
    path.write_text(json.dumps(rec))
    listed = proj.cli("trash", "list")
    assert listed.code == 0, listed
    assert re.search(rf"{re.escape(tid)} +no usable record.*date that does not exist", listed.out)
    assert proj.cli("trash", "purge", "--older-than", "0h").code == 0
    assert path.exists()  # never purged without a record to date it
    r = proj.cli("restore", "--id", tid)
    assert r.code == 1 and "date that does not exist" in one_line(r)
    write(proj.root, "bench/b_20250904_000000.md", "# Bench\nStatus: PASS\n")
    assert proj.cli("gc", "--apply", "--force").code == 0  # one bad record blocks no gc


@pytest.mark.parametrize(
    "journal",
    [
        b'{"format":"artifacts_tasks.journal","version":1,"operation":"gc","state":"moving",'
        b'"started_at":"2025-01-01T00:00:00Z","pid":1,"moves":[["bench/a.md",'
        b'".trash/0123abcd/bench/a.md",1e400,0,"x"]],"trash_ids":["0123abcd"],"prune":[],'
        b'"reports":[]}',
        b'{"format":"artifacts_tasks.journal","version":1,"operation":"gc","state":"moving",'
        b'"started_at":"2025-01-01T00:00:00Z","pid":1,"moves":[["../x","'
        b'.trash/0123abcd/x",1,0,"x"]],"trash_ids":["0123abcd"],"prune":[],"reports":[]}',
        b'{"format":"artifacts_tasks.journal","version":1,"operation":"gc"',
    ],
)
def test_a_hostile_or_truncated_journal_stops_every_command_touching_nothing(
    proj: Project, journal: bytes
) -> None:
    assert proj.cli("scan").code == 0
    (proj.root / ".journal.json").write_bytes(journal)
    before = everything(proj.root)
    for argv in (["scan"], ["list"], ["gc", "--apply", "--force"], ["verify"]):
        r = proj.cli(*argv)
        assert r.code == 2 and one_line(r).startswith("journal error:"), (argv, r)
    assert everything(proj.root) == before


def test_the_library_refresh_never_recovers_unless_asked(proj: Project) -> None:
    """A journal is only "interrupted" when nobody holds the lock; refresh cannot know."""
    assert proj.cli("scan").code == 0
    journal = (
        b'{"format":"artifacts_tasks.journal","version":1,"operation":"gc","state":"moving",'
        b'"started_at":"2025-01-01T00:00:00Z","pid":1,"moves":[],"trash_ids":[],'
        b'"prune":[],"reports":[]}'
    )
    (proj.root / ".journal.json").write_bytes(journal)
    refresh(proj.root, proj.config_obj())
    assert (proj.root / ".journal.json").exists()
    r = proj.cli("list")
    assert r.code == 0 and "rolled back the interrupted gc --apply" in r.err
    assert not (proj.root / ".journal.json").exists()


def test_with_json_the_question_goes_to_the_terminal_not_into_the_json(proj: Project) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    r = proj.cli("gc", "--apply", "--json", inp=Tty("y\n"))
    assert r.code == 0, r
    doc = json.loads(r.out)  # stdout is only the JSON
    assert doc["applied"]["moved"]
    assert "[y/N]" in r.err and "GC Plan Summary (DryRun: false)" in r.err


@pytest.mark.parametrize(
    ("argv", "bar"),
    [
        (["gc", "--apply", "--force"], "gc apply"),
        (["compact", "--apply"], "compact"),
    ],
)
def test_long_applies_draw_progress_on_a_terminal_and_only_there(
    tmp_path: Path, argv: list[str], bar: str
) -> None:
    files = {f"bench/b_202509{d:02d}_000000.jsonl": "x" * 200_000 + "\n" for d in range(1, 9)}
    config = "retention:\n  bench: {keep: 1}\ncompaction:\n  jsonl: {min_size_kb: 1}\n"

    def stderr_of(extra: list[str], tty: bool) -> str:
        where = tmp_path / f"{tty}{len(extra)}"
        where.mkdir()
        proj = make_project(where, files, config)
        common = ["--root", str(proj.root), "--config", str(proj.config), *extra]
        if not tty:
            proc = subprocess.run(
                [sys.executable, "-m", "artifacts_tasks", *common, *argv],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=60,
            )
            assert proc.returncode == 0
            return proc.stderr.decode()
        primary, secondary = os.openpty()
        # A terminal 100 columns wide (a bare pty has no size, and tqdm draws in none).
        fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
        running = subprocess.Popen(
            [sys.executable, "-m", "artifacts_tasks", *common, *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=secondary,
        )
        os.close(secondary)
        seen = b""
        with contextlib.suppress(OSError):  # EIO once the process has closed its side
            while chunk := os.read(primary, 65536):
                seen += chunk
        os.close(primary)
        assert running.wait(timeout=60) == 0
        return seen.decode("utf-8", "replace")

    shown = stderr_of([], tty=True)
    assert bar in shown and "files" in shown
    assert bar not in stderr_of([], tty=False)
    assert bar not in stderr_of(["--no-progress"], tty=True)
