"""Crash safety through the real entry point: `python -m artifacts_tasks` as a subprocess,
a real SIGKILL at a step, then recovery (DESIGN §9), and what the user reads about it.

Each case sets `ARTIFACTS_FAILPOINT` to the step where the CLI kills itself, as a power cut
would stop it, then lets the next command recover. Afterwards: no byte is lost (every
file's checksum is at its place or in the trash with a record naming it), protected runs
are in place, the manifest parses and agrees with the tree, and no journal or temp file is
left. test_crash_sweep.py does the same at every step of every operation; the cases here
keep the messages, the copied tree and the swapped symlink honest.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import xxhash

from ..conftest import run_main, write
from . import harness

CONFIG = """
retention:
  bench: {keep: 2}
  greenwall: {keep: 1}
trash:
  retention_days: 30
"""


def _tree(root: Path) -> None:
    """Two families; some runs alone in their own directory (which gc then empties)."""
    day = datetime(2025, 3, 1, tzinfo=UTC)
    for i in range(7):
        when = day + timedelta(days=i)
        stamp = when.strftime("%Y%m%d_%H%M%S")
        base = "bench" if i % 2 else f"ci/{when:%Y%m%d}/bench"
        status = "PASS" if i in (1, 2) else "FAIL"
        write(root, f"{base}/run_{stamp}.md", f"# run {i}\n\nStatus: {status}\n", mtime=when)
        write(root, f"{base}/run_{stamp}.jsonl", f'{{"i": {i}, "x": "{"y" * i}"}}\n', mtime=when)
    for i in range(3):
        when = day + timedelta(days=i, hours=5)
        stamp = when.strftime("%Y%m%d_%H%M%S")
        write(root, f"greenwall/gw_{stamp}.md", f"Status: PASS\n{i}\n", mtime=when)


def _checksums(root: Path) -> dict[str, str]:
    """Every artifact file (no dot part) -> xxh3-128 of its bytes."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith("."):
                path = Path(dirpath, name)
                found[path.relative_to(root).as_posix()] = xxhash.xxh3_128_hexdigest(
                    path.read_bytes()
                )
    return found


def _trashed(root: Path) -> dict[str, set[str]]:
    """Checksum -> trash folders holding a file with it, checking each file is recorded."""
    held: dict[str, set[str]] = {}
    trash = root / ".trash"
    if not trash.is_dir():
        return held
    for folder in trash.iterdir():
        if not folder.is_dir() or folder.name.startswith("."):
            continue
        files = [p for p in folder.rglob("*") if p.is_file() and p.name != ".record.json"]
        if not files:
            continue
        record = json.loads((folder / ".record.json").read_text())
        recorded = {f["path"]: f["xxh3_128"] for f in record["files"]}
        for path in files:
            rel = path.relative_to(folder).as_posix()
            digest = xxhash.xxh3_128_hexdigest(path.read_bytes())
            assert recorded.get(rel) == digest, f"{path} is not as its record says"
            held.setdefault(digest, set()).add(folder.name)
    return held


def _cli(root: Path, *argv: str, failpoint: str = "") -> subprocess.CompletedProcess[str]:
    return harness.run_subprocess(root, *argv, failpoint=failpoint)


def _assert_no_loss(root: Path, original: Mapping[str, str]) -> None:
    here = _checksums(root)
    trashed = _trashed(root)
    for rel, digest in original.items():
        assert here.get(rel) == digest or digest in trashed, f"{rel} is lost"


def _assert_recovered(root: Path, original: Mapping[str, str], protected: set[str]) -> None:
    """The invariants of DESIGN §9 once a command has recovered."""
    _assert_no_loss(root, original)
    assert not (root / ".journal.json").exists()
    leftovers = [p for p in root.rglob("*") if ".tmp-" in p.name or p.name.startswith(".purge-")]
    assert leftovers == []
    here = _checksums(root)
    assert protected <= set(here), "a protected run left its place"
    config = root.parent / "config" / "artifacts.yaml"
    listed = json.loads(run_main("--root", root, "--config", config, "list", "--json").out)
    assert {p for e in listed["entries"] for p in e["paths"]} == set(here)
    assert run_main("--root", root, "--config", config, "verify").code == 0


@pytest.fixture
def pristine(tmp_path: Path) -> tuple[Path, Path, dict[str, str], set[str], set[str]]:
    """A scanned tree, its config, its checksums, the protected paths and the doomed ones."""
    root = tmp_path / "pristine" / "artifacts"
    _tree(root)
    config = tmp_path / "artifacts.yaml"
    config.write_text(CONFIG)
    assert run_main("--root", root, "--config", config, "scan").code == 0
    plan = json.loads(run_main("--root", root, "--config", config, "gc", "--json").out)
    listed = json.loads(run_main("--root", root, "--config", config, "list", "--json").out)
    paths = {e["id"]: e["paths"] for e in listed["entries"]}
    safety = {"pinned", "last_pass", "last_run"}
    protected = {p for k in plan["keep"] if safety & set(k["reasons"]) for p in paths[k["id"]]}
    doomed = {p for d in plan["delete"] for p in paths[d["id"]]}
    assert len(plan["delete"]) >= 4 and protected
    return root, config, _checksums(root), protected, doomed


def _copy(pristine_root: Path, where: Path) -> Path:
    root = where / "artifacts"
    shutil.copytree(pristine_root, root, symlinks=True)
    (where / "config").mkdir()
    return root


def _with_config(root: Path, config: Path) -> Path:
    """The config at ./config/artifacts.yaml beside the root, where the CLI looks by default."""
    shutil.copy(config, root.parent / "config" / "artifacts.yaml")
    return root


# Three steps of `gc --apply` through the real entry point, with what the user reads:
# before the commit point everything goes back, after it the moves stand. Every other step,
# and a second kill in every recovery, is swept in test_crash_sweep.py.
GC_STEPS = [
    ("journal_written", "back"),
    ("moved:2", "back"),
    ("committed", "forward"),
]


@pytest.mark.parametrize(("step", "outcome"), GC_STEPS)
def test_gc_apply_killed_at_each_step_recovers(
    pristine: tuple[Path, Path, dict[str, str], set[str], set[str]],
    tmp_path: Path,
    step: str,
    outcome: str,
) -> None:
    source, config, original, protected, doomed = pristine
    root = _with_config(_copy(source, tmp_path / "case"), config)
    killed = _cli(root, "gc", "--apply", "--force", failpoint=step)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    _assert_no_loss(root, original)  # even before any recovery
    if step.startswith(("moved", "record_written:3", "report_written", "committed")):
        assert _trashed(root), "the kill came after files had moved"

    after = _cli(root, "list")  # any command recovers first
    assert after.returncode == 0, after.stderr
    if step != "journal_removed":
        assert "note: " in after.stderr and "interrupted gc --apply" in after.stderr
    _assert_recovered(root, original, protected)
    here = set(_checksums(root))
    if outcome == "back":
        assert here == set(original), "a rolled-back apply must put every file back"
        assert not [p for p in (root / ".trash").glob("*") if p.is_dir()]
        assert not list((root / ".trash").glob("gc_report_*"))
    else:
        assert here == set(original) - doomed
        assert len(list((root / ".trash").glob("gc_report_*.md"))) == 1
        emptied = {str(Path(p).parent) for p in doomed} - {str(Path(p).parent) for p in here}
        assert emptied and not [d for d in emptied if (root / d).exists()]
    again = _cli(root, "gc", "--apply", "--force")
    assert again.returncode == 0, again.stderr
    assert set(_checksums(root)) == set(original) - doomed  # the gc completes next time
    _assert_recovered(root, original, protected)


def test_a_second_kill_during_recovery_is_recovered_too(
    pristine: tuple[Path, Path, dict[str, str], set[str], set[str]], tmp_path: Path
) -> None:
    source, config, original, protected, _ = pristine
    root = _with_config(_copy(source, tmp_path / "case"), config)
    assert _cli(root, "gc", "--apply", "--force", failpoint="moved:5").returncode == -9
    interrupted = _cli(root, "list", failpoint="rollback_moved:3")
    assert interrupted.returncode == -signal.SIGKILL
    assert (root / ".journal.json").exists()
    _assert_no_loss(root, original)
    assert _cli(root, "list").returncode == 0
    _assert_recovered(root, original, protected)


RESTORE_STEPS = [
    ("moved:1", "trash"),
    ("committed", "restored"),
]


@pytest.mark.parametrize(("step", "outcome"), RESTORE_STEPS)
def test_restore_killed_at_each_step_leaves_the_run_whole_in_one_place(
    pristine: tuple[Path, Path, dict[str, str], set[str], set[str]],
    tmp_path: Path,
    step: str,
    outcome: str,
) -> None:
    source, config, original, protected, _ = pristine
    root = _with_config(_copy(source, tmp_path / "case"), config)
    assert _cli(root, "gc", "--apply", "--force").returncode == 0
    records = {
        p: json.loads((p / ".record.json").read_text())
        for p in (root / ".trash").iterdir()
        if p.is_dir()
    }
    folder, record = next((p, r) for p, r in sorted(records.items()) if r["file_count"] == 2)
    paths = {f["path"] for f in record["files"]}

    killed = _cli(root, "restore", "--id", folder.name, failpoint=step)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert _cli(root, "list").returncode == 0
    _assert_recovered(root, original, protected)
    here = set(_checksums(root))
    if outcome == "trash":
        assert not paths & here and (folder / ".record.json").exists()
    else:
        assert paths <= here and not folder.exists()


def test_purge_killed_midway_finishes_on_the_next_command(
    pristine: tuple[Path, Path, dict[str, str], set[str], set[str]], tmp_path: Path
) -> None:
    source, config, original, protected, _ = pristine
    root = _with_config(_copy(source, tmp_path / "case"), config)
    assert _cli(root, "gc", "--apply", "--force").returncode == 0
    folders = sorted(p for p in (root / ".trash").iterdir() if p.is_dir())
    old = folders[0]
    record = json.loads((old / ".record.json").read_text())
    record["trashed_at"] = "2020-01-01T00:00:00Z"
    (old / ".record.json").write_text(json.dumps(record))
    purged = {f["xxh3_128"] for f in record["files"]}

    killed = _cli(root, "trash", "purge", failpoint="purge_renamed")
    assert killed.returncode == -signal.SIGKILL
    assert not old.exists() and list((root / ".trash").glob(".purge-*"))
    after = _cli(root, "trash", "list")
    assert after.returncode == 0 and "interrupted purge" in after.stderr
    assert not list((root / ".trash").glob(".purge-*"))
    _assert_recovered(root, {k: v for k, v in original.items() if v not in purged}, protected)
    assert {p.name for p in (root / ".trash").iterdir() if p.is_dir()} == {
        p.name for p in folders[1:]
    }


def test_failpoints_are_inert_unless_named(tmp_path: Path) -> None:
    """The environment variable names one step; any other value changes nothing."""
    root = tmp_path / "artifacts"
    _tree(root)
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "artifacts.yaml").write_text(CONFIG)
    r = _cli(root, "gc", "--apply", "--force", failpoint="no_such_step")
    assert r.returncode == 0, r.stderr
    assert "Moved" in r.stdout


def test_rollback_in_a_copied_tree_knows_its_files_by_checksum(
    pristine: tuple[Path, Path, dict[str, str], set[str], set[str]], tmp_path: Path
) -> None:
    """A crashed tree copied elsewhere (a CI cache, a backup) has new mtimes: recovery
    still recognises the moved files by their journaled checksums and puts them back."""
    source, config, original, protected, _ = pristine
    root = _with_config(_copy(source, tmp_path / "case"), config)
    assert _cli(root, "gc", "--apply", "--force", failpoint="moved:3").returncode == -9
    copy = tmp_path / "copy"
    shutil.copytree(root.parent, copy)  # copy2 keeps mtimes; make them new, as cp -r does
    for path in (copy / "artifacts").rglob("*"):
        if path.is_file():
            os.utime(path)
    root = copy / "artifacts"
    after = _cli(root, "list")
    assert after.returncode == 0 and "3 file(s) moved back" in after.stderr, after.stderr
    _assert_recovered(root, original, protected)
    assert set(_checksums(root)) == set(original)


def test_rollback_never_follows_a_directory_swapped_for_a_symlink(
    pristine: tuple[Path, Path, dict[str, str], set[str], set[str]], tmp_path: Path
) -> None:
    source, config, _, _, _ = pristine
    root = _with_config(_copy(source, tmp_path / "case"), config)
    assert _cli(root, "gc", "--apply", "--force", failpoint="moved:1").returncode == -9
    journal = json.loads((root / ".journal.json").read_text())
    src_dir = root / Path(journal["moves"][0][0]).parent
    outside = tmp_path / "outside"
    shutil.move(src_dir, outside)
    src_dir.symlink_to(outside, target_is_directory=True)
    before = {p.name: p.read_bytes() for p in outside.iterdir()}
    for argv in (["list"], ["scan"], ["trash", "list"]):
        r = _cli(root, *argv)
        assert r.returncode == 0, (argv, r.stderr)
    assert {p.name: p.read_bytes() for p in outside.iterdir()} == before
    assert not (root / ".journal.json").exists()
    assert _trashed(root), "the file that could not go back stays in the trash, recorded"
