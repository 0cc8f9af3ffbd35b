"""The doit tasks (`artifacts_tasks.tasks`), driven through real `doit` subprocesses.

Every test builds a throw-away project (its own dodo.py, artifacts tree and config) under
tmp_path and runs the installed `doit` there, the way a user's project would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import artifacts_tasks.tasks as tasks_module
from artifacts_tasks.manifest import load_manifest

from .conftest import BIN, REPO, Result, run_console, write

STAR_DODO = """\
from artifacts_tasks.tasks import *  # noqa: F403

DOIT_CONFIG = {"dep_file": ".doit.json", "backend": "json"}
"""

FACTORY_DODO = """\
import os
from pathlib import Path

from artifacts_tasks.tasks import make_tasks

DOIT_CONFIG = {"dep_file": ".doit.json", "backend": "json"}

globals().update(make_tasks(root="out/arts", config="cfg/a.yaml", after=["verify"]))


def _verify():
    if os.environ.get("VERIFY_WRITES", "1") == "0":
        print("verify wrote nothing")
        return
    bench = Path("out/arts/bench")
    bench.mkdir(parents=True, exist_ok=True)
    n = len(list(bench.glob("run_*.md")))
    (bench / f"run_{n}_20250906_1430{n:02d}.md").write_text("# bench\\nStatus: PASS\\n")
    print(f"verify wrote run {n}")


def task_verify():
    return {"actions": [_verify], "verbosity": 2}
"""

# Every artifact gets a fixed, old mtime, so any later edit is visible to a stat.
T0 = datetime(2025, 9, 6, 15, 0, 0, tzinfo=UTC)
BENCH_MD = "bench/run_20250906_143022.md"
GREENWALL_MD = "greenwall/gw_20250905_120000.md"
RAN = ".  scan"
UP_TO_DATE = "-- scan"


def doit(cwd: Path, *args: str, env: Mapping[str, str] | None = None) -> Result:
    """The installed `doit` as a real subprocess in `cwd` (ARTIFACTS_* only when given)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("ARTIFACTS_")}
    proc = subprocess.run(
        [str(BIN / "doit"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**base, **(env or {})},
        stdin=subprocess.DEVNULL,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def assert_ran(r: Result, task: str = "scan") -> None:
    assert r.code == 0, r
    assert f".  {task}" in r.out.splitlines(), r
    assert "Traceback" not in r.out + r.err, r


def assert_up_to_date(r: Result) -> None:
    assert r.code == 0, r
    lines = r.out.splitlines()
    assert UP_TO_DATE in lines, r
    assert RAN not in lines, r
    assert "Scanned" not in r.out, r  # the scan did no work at all


def make_project(base: Path, dodo: str = STAR_DODO) -> Path:
    """A project using the library's default tasks on ./artifacts with ./config/artifacts.yaml."""
    base.mkdir(parents=True)
    (base / "dodo.py").write_text(dodo)
    root = base / "artifacts"
    write(root, BENCH_MD, "# bench\nStatus: PASS\n", mtime=T0)
    write(root, "bench/run_20250906_143022.jsonl", '{"status": "pass"}\n', mtime=T0)
    write(root, "bench/p99_20250906_143022.json", '{"status": "pass", "p99_ms": 4.2}\n', mtime=T0)
    write(root, GREENWALL_MD, "Status: FAIL\n", mtime=T0)
    write(root, "microstructure/proofs/proof_20250904_100000.jsonl", '{"ok": true}\n', mtime=T0)
    write(base, "config/artifacts.yaml", "retention: {bench: {keep: 10}}\n", mtime=T0)
    return base


def manifest(root: Path) -> dict[str, Any]:
    """The manifest as the library reads it (validated), entries as plain dicts."""
    loaded = load_manifest(root)
    assert loaded is not None
    return {"entries": [e.to_json() for e in loaded.entries]}


def manifest_paths(root: Path) -> set[str]:
    loaded = load_manifest(root)
    assert loaded is not None
    return {f.path for _, f in loaded.files()}


def manifest_stamp(root: Path) -> tuple[int, int, bytes]:
    """What must not change when a task was up to date: mtime, inode and bytes."""
    path = root / ".manifest.json"
    st = path.stat()
    return st.st_mtime_ns, st.st_ino, path.read_bytes()


def list_json(cwd: Path, *options: str) -> dict[str, dict[str, Any]]:
    """`cryptorun artifacts list --json` as a real subprocess: entries by id."""
    r = run_console(*options, "artifacts", "list", "--json", cwd=cwd, timeout=120)
    assert r.code == 0, r
    return {e["id"]: e for e in json.loads(r.out)["entries"]}


def set_mtime(path: Path, when: datetime) -> None:
    ns = int(when.timestamp()) * 1_000_000_000
    os.utime(path, ns=(ns, ns))


# ---- 1. up to date, and what makes it run again ------------------------------------------


def test_first_scan_runs_then_is_up_to_date(tmp_path: Path) -> None:
    proj = make_project(tmp_path / "proj")
    root = proj / "artifacts"

    first = doit(proj, "scan")
    assert_ran(first)
    assert "Scanned 5 files in 3 runs" in first.out
    data = manifest(root)
    assert {(e["family"], e["status"]) for e in data["entries"]} == {
        ("bench", "pass"),
        ("greenwall", "fail"),
        ("proofs", "pass"),
    }
    # The project's DOIT_CONFIG is honoured: a json dep file, no dbm file.
    assert "scan" in json.loads((proj / ".doit.json").read_text())
    assert not list(proj.glob(".doit.db*"))

    before = manifest_stamp(root)
    second = doit(proj, "scan")
    assert_up_to_date(second)
    assert manifest_stamp(root) == before


def _add(proj: Path) -> Callable[[Path], None]:
    root = proj / "artifacts"
    write(root, "bench/run_20250907_090000.md", "Status: PASS\n", mtime=T0 + timedelta(hours=1))

    def check(root: Path) -> None:
        assert "bench/run_20250907_090000.md" in manifest_paths(root)

    return check


def _remove(proj: Path) -> Callable[[Path], None]:
    (proj / "artifacts" / GREENWALL_MD).unlink()

    def check(root: Path) -> None:
        assert GREENWALL_MD not in manifest_paths(root)
        assert "greenwall" not in {e["family"] for e in manifest(root)["entries"]}

    return check


def _edit(proj: Path) -> Callable[[Path], None]:
    # Same size (FAIL -> PASS), so only the content and the mtime tell the change.
    path = proj / "artifacts" / GREENWALL_MD
    path.write_text("Status: PASS\n")
    set_mtime(path, T0 + timedelta(minutes=1))

    def check(root: Path) -> None:
        (entry,) = [e for e in manifest(root)["entries"] if e["family"] == "greenwall"]
        assert entry["status"] == "pass"

    return check


def _rename(proj: Path) -> Callable[[Path], None]:
    # Same run, size, mtime and inode: only the path differs.
    root = proj / "artifacts"
    os.rename(root / BENCH_MD, root / "bench/renamed_20250906_143022.md")

    def check(root: Path) -> None:
        paths = manifest_paths(root)
        assert "bench/renamed_20250906_143022.md" in paths
        assert BENCH_MD not in paths

    return check


def _config(proj: Path) -> Callable[[Path], None]:
    path = proj / "config" / "artifacts.yaml"
    path.write_text("retention: {bench: {keep: 3}}\n")
    set_mtime(path, T0 + timedelta(minutes=1))

    def check(root: Path) -> None:
        assert len(manifest(root)["entries"]) == 3

    return check


def _delete_manifest(proj: Path) -> Callable[[Path], None]:
    root = proj / "artifacts"
    entries = manifest(root)["entries"]
    (root / ".manifest.json").unlink()

    def check(root: Path) -> None:
        assert manifest(root)["entries"] == entries

    return check


@pytest.mark.parametrize(
    "change",
    [_add, _remove, _edit, _rename, _config, _delete_manifest],
    ids=["add", "remove", "edit", "rename", "config", "delete-manifest"],
)
def test_scan_reruns_after_a_change(
    tmp_path: Path, change: Callable[[Path], Callable[[Path], None]]
) -> None:
    proj = make_project(tmp_path / "proj")
    root = proj / "artifacts"
    assert_ran(doit(proj, "scan"))

    check = change(proj)
    rerun = doit(proj, "scan")
    assert_ran(rerun)
    assert "Scanned" in rerun.out
    check(root)

    # The new state is remembered: nothing changed since, so the next run does no work.
    before = manifest_stamp(root)
    assert_up_to_date(doit(proj, "scan"))
    assert manifest_stamp(root) == before


@pytest.mark.parametrize(
    "extra",
    [
        ["notes.txt", "logs/run_20250906_150000.md", "bench/sub/run_20250906_150000.md"],
        [".notes.md", "bench/.wip_20250906_150000.md", ".cache/bench/run_20250906_150000.md"],
    ],
    ids=["unmanaged-files", "dot-files"],
)
def test_scan_stays_up_to_date_for_non_artifacts(tmp_path: Path, extra: list[str]) -> None:
    proj = make_project(tmp_path / "proj")
    root = proj / "artifacts"
    assert_ran(doit(proj, "scan"))
    before = manifest_stamp(root)

    for rel in extra:
        write(root, rel, "Status: PASS\n", mtime=T0 + timedelta(hours=1))
    assert_up_to_date(doit(proj, "scan"))
    assert manifest_stamp(root) == before


def test_unmanaged_file_in_a_family_directory_reruns_without_changing_runs(
    tmp_path: Path,
) -> None:
    """A file in a family's directory may rerun the scan (the contract allows it); the runs
    it reports stay the same."""
    proj = make_project(tmp_path / "proj")
    root = proj / "artifacts"
    assert_ran(doit(proj, "scan"))
    entries = manifest(root)["entries"]
    write(root, "bench/readme.txt", "notes\n", mtime=T0 + timedelta(hours=1))
    rerun = doit(proj, "scan")
    assert_ran(rerun)
    assert "0 hashed" in rerun.out
    assert manifest(root)["entries"] == entries
    assert_up_to_date(doit(proj, "scan"))


def test_repository_dodo_scans_by_default(tmp_path: Path) -> None:
    """The repository's own dodo.py: a bare `doit` scans, with a json dep file."""
    proj = make_project(tmp_path / "proj")
    shutil.copy(REPO / "dodo.py", proj / "dodo.py")
    assert_ran(doit(proj))
    assert manifest_paths(proj / "artifacts")
    assert "scan" in json.loads((proj / ".doit.json").read_text())
    assert_up_to_date(doit(proj))


# ---- 2. what the library imposes on the importing project --------------------------------


def test_library_sets_no_doit_config_and_exports_only_tasks() -> None:
    assert not hasattr(tasks_module, "DOIT_CONFIG")
    exported = [
        "make_tasks",
        "task_compact",
        "task_compact_apply",
        "task_gc",
        "task_gc_apply",
        "task_pin",
        "task_report",
        "task_scan",
    ]
    assert sorted(tasks_module.__all__) == exported
    namespace: dict[str, Any] = {}
    exec("from artifacts_tasks.tasks import *", namespace)
    namespace.pop("__builtins__")
    assert sorted(namespace) == exported
    assert "DOIT_CONFIG" not in namespace
    for name in exported[1:]:
        assert isinstance(namespace[name](), dict)


def test_star_import_defines_only_the_library_tasks(tmp_path: Path) -> None:
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "dodo.py").write_text(STAR_DODO)
    r = doit(proj, "list")
    assert r.code == 0, r
    assert sorted(line.split()[0] for line in r.out.splitlines() if line.strip()) == [
        "compact",
        "compact_apply",
        "gc",
        "gc_apply",
        "pin",
        "report",
        "scan",
    ]


# ---- 3. doit pin -------------------------------------------------------------------------


def test_pin_on_off_and_unknown_id(tmp_path: Path) -> None:
    proj = make_project(tmp_path / "proj")
    assert_ran(doit(proj, "scan"))
    entries = list_json(proj)
    (bench_id,) = [i for i, e in entries.items() if e["family"] == "bench"]
    assert not any(e["pinned"] for e in entries.values())

    assert_ran(doit(proj, "pin", "--id", bench_id, "--on"), "pin")
    pinned = {i: e["pinned"] for i, e in list_json(proj).items()}
    assert pinned == {i: i == bench_id for i in entries}

    assert_ran(doit(proj, "pin", "--id", bench_id, "--off"), "pin")
    assert not any(e["pinned"] for e in list_json(proj).values())

    unknown = "deadbeef00"
    r = doit(proj, "pin", "--id", unknown, "--on")
    assert r.code != 0
    assert "Traceback" not in r.out + r.err
    err_lines = [line for line in r.err.splitlines() if line.strip()]
    assert len(err_lines) == 1, r
    assert unknown in err_lines[0]

    # Neither --on nor --off: refused, nothing pinned.
    r = doit(proj, "pin", "--id", bench_id)
    assert r.code != 0
    assert "Traceback" not in r.out + r.err
    assert not any(e["pinned"] for e in list_json(proj).values())


# ---- 4. the factory, task ordering and the environment ------------------------------------


def test_factory_runs_after_the_projects_own_task(tmp_path: Path) -> None:
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "dodo.py").write_text(FACTORY_DODO)
    # The config names a family of its own, so the manifest shows whether it was read.
    write(proj, "cfg/a.yaml", 'families: {notes: {patterns: ["**/notes/*.md"]}}\n', mtime=T0)
    root = proj / "out" / "arts"
    write(root, "notes/n_20250901_000000.md", "Status: PASS\n", mtime=T0)

    r = doit(proj, "scan")
    assert_ran(r, "verify")
    assert_ran(r, "scan")
    lines = r.out.splitlines()
    assert lines.index(".  verify") < lines.index(RAN)
    assert manifest_paths(root) == {"bench/run_0_20250906_143000.md", "notes/n_20250901_000000.md"}
    assert {e["family"] for e in manifest(root)["entries"]} == {"bench", "notes"}
    assert not (proj / "artifacts").exists()

    # verify runs again but adds nothing: scan sees the tree as verify left it, up to date.
    r = doit(proj, "scan", env={"VERIFY_WRITES": "0"})
    assert_ran(r, "verify")
    assert_up_to_date(r)

    # Both named on the command line: verify once, then scan, which sees the new run.
    r = doit(proj, "verify", "scan")
    assert_ran(r, "verify")
    assert_ran(r, "scan")
    lines = r.out.splitlines()
    assert lines.count(".  verify") == 1
    assert lines.index(".  verify") < lines.index(RAN)
    assert "bench/run_1_20250906_143001.md" in manifest_paths(root)
    assert len(manifest(root)["entries"]) == 3


def test_environment_chooses_root_and_config(tmp_path: Path) -> None:
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "dodo.py").write_text(STAR_DODO)
    root = proj / "data" / "arts"
    write(root, BENCH_MD, "Status: PASS\n", mtime=T0)
    write(root, "logs/l_20250901_000000.md", "Status: FAIL\n", mtime=T0)
    # A default config that would fail, to show the one from the environment is used instead.
    write(proj, "config/artifacts.yaml", "retention: {bench: {keep: -5}}\n", mtime=T0)
    write(proj, "conf/c.yaml", 'families: {logs: {patterns: ["**/logs/*.md"]}}\n', mtime=T0)
    env = {"ARTIFACTS_ROOT": "data/arts", "ARTIFACTS_CONFIG": "conf/c.yaml"}

    assert_ran(doit(proj, "scan", env=env))
    assert {(e["family"], e["status"]) for e in manifest(root)["entries"]} == {
        ("bench", "pass"),
        ("logs", "fail"),
    }
    assert not (proj / "artifacts").exists()
    assert_up_to_date(doit(proj, "scan", env=env))

    # The environment's config file is watched too.
    path = proj / "conf" / "c.yaml"
    path.write_text(path.read_text() + "retention: {logs: {keep: 2}}\n")
    set_mtime(path, T0 + timedelta(minutes=1))
    assert_ran(doit(proj, "scan", env=env))


# ---- 5. a CI cache restores the project elsewhere -----------------------------------------


def test_copied_project_scans_to_the_same_manifest(tmp_path: Path) -> None:
    proj = make_project(tmp_path / "proj")
    assert_ran(doit(proj, "scan"))
    before = list_json(proj)
    (bench_id,) = [i for i, e in before.items() if e["family"] == "bench"]
    assert_ran(doit(proj, "pin", "--id", bench_id, "--on"), "pin")
    before = list_json(proj)
    assert before[bench_id]["pinned"]
    assert_ran(doit(proj, "gc"), "gc")

    copy = tmp_path / "restored"
    shutil.copytree(proj, copy, copy_function=shutil.copy)
    assert (copy / ".doit.json").read_bytes() == (proj / ".doit.json").read_bytes()
    old_st = (proj / "artifacts" / BENCH_MD).stat()
    new_st = (copy / "artifacts" / BENCH_MD).stat()
    assert (new_st.st_ino, new_st.st_mtime_ns) != (old_st.st_ino, old_st.st_mtime_ns)

    r = doit(copy, "scan")
    assert r.code == 0, r
    assert "Traceback" not in r.out + r.err
    after = list_json(copy)

    def summary(entries: dict[str, dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
        keys = ("family", "status", "size", "file_count", "paths", "pinned")
        return {i: tuple(e[k] for k in keys) for i, e in entries.items()}

    assert summary(after) == summary(before)
    assert_up_to_date(doit(copy, "scan"))
    # gc depends on what the manifest says about the runs, not on mtimes or inodes.
    gc_again = doit(copy, "gc")
    assert gc_again.code == 0, gc_again
    assert "-- gc" in gc_again.out.splitlines() and "GC Plan Summary" not in gc_again.out


# ---- 6. a bad config -----------------------------------------------------------------------


def test_bad_config_fails_in_one_line_and_writes_nothing(tmp_path: Path) -> None:
    proj = make_project(tmp_path / "proj")
    config = proj / "config" / "artifacts.yaml"
    config.write_text("retention: {bench: {keep: -5}}\n")
    root = proj / "artifacts"

    def assert_config_error(r: Result) -> None:
        assert r.code != 0, r
        both = r.out + r.err
        assert "Traceback" not in both
        named = [
            line
            for line in both.splitlines()
            if "config/artifacts.yaml" in line and "retention.bench.keep" in line
        ]
        assert len(named) == 1, r

    for _ in range(2):  # a failed scan is not remembered as done: it fails again
        assert_config_error(doit(proj, "scan"))
        assert not (root / ".manifest.json").exists()

    config.write_text("retention: {bench: {keep: 3}}\n")
    assert_ran(doit(proj, "scan"))
    before = manifest_stamp(root)

    # Broken again in a project that has a manifest: it is left exactly as it was.
    config.write_text("retention: {bench: {keep: -5}}\n")
    set_mtime(config, T0 + timedelta(minutes=5))
    assert_config_error(doit(proj, "scan"))
    assert manifest_stamp(root) == before


def test_a_scan_that_could_not_read_everything_is_not_up_to_date(tmp_path: Path) -> None:
    """An unreadable file is warned about on every run, never settled into `-- scan`."""
    proj = make_project(tmp_path / "proj")
    root = proj / "artifacts"
    blocked = root / "bench" / "blocked_20250906_150000"
    blocked.mkdir(parents=True)
    (proj / "sitecustomize.py").write_text(
        "import os\n"
        "_scandir = os.scandir\n"
        "def scandir(path='.'):\n"
        "    if str(path).endswith('blocked_20250906_150000'):\n"
        "        raise PermissionError(13, 'Permission denied', str(path))\n"
        "    return _scandir(path)\n"
        "os.scandir = scandir\n"
    )
    env = {"PYTHONPATH": str(proj)}
    for _ in range(2):
        result = doit(proj, "scan", env=env)
        assert_ran(result)
        assert "unreadable directory (Permission denied)" in result.err


def test_a_bare_doit_with_only_the_star_import_succeeds(tmp_path: Path) -> None:
    """Without default_tasks doit runs every task: `pin` with no id must do nothing, not fail."""
    proj = make_project(tmp_path / "proj")
    (proj / "dodo.py").write_text("from artifacts_tasks.tasks import *  # noqa: F403\n")
    result = doit(proj)
    assert result.code == 0, result
    assert ".  scan" in result.out and "pin: nothing to pin" in result.out


def test_gc_reruns_when_the_runs_change_and_not_otherwise(tmp_path: Path) -> None:
    proj = make_project(tmp_path / "proj")
    root = proj / "artifacts"
    first = doit(proj, "gc")
    assert_ran(first, "gc")
    assert "GC Plan Summary (DryRun: true)" in first.out
    assert "-- gc" in doit(proj, "gc").out.splitlines()
    write(root, "bench/run_20250907_090000.md", "Status: FAIL\n", mtime=T0)  # a new run
    rerun = doit(proj, "gc")
    assert_ran(rerun, "scan")
    assert_ran(rerun, "gc")
    assert "Total Entries: 4" in rerun.out
    (proj / "config" / "artifacts.yaml").write_text("retention: {bench: {keep: 1}}\n")
    assert_ran(doit(proj, "gc"), "gc")


def test_gc_stays_up_to_date_after_a_restore_even_with_mtime_dated_runs(tmp_path: Path) -> None:
    proj = make_project(tmp_path / "proj")
    write(proj / "artifacts", "bench/baseline.md", "# baseline\nStatus: PASS\n", mtime=T0)
    assert_ran(doit(proj, "gc"), "gc")
    copy = tmp_path / "restored"
    shutil.copytree(proj, copy, copy_function=shutil.copy)  # new mtimes and inodes
    restored = doit(copy, "gc")
    assert restored.code == 0, restored
    assert "-- gc" in restored.out.splitlines(), restored
