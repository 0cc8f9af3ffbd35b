"""Faults the file system can raise, injected without touching the code under test.

`strace --inject` makes one system call fail with a chosen errno — the Nth fsync, openat,
write, mkdirat, renameat or unlinkat of a real `python -m artifacts_tasks` run — and the
sweep walks N over the calls that touch the project (a traced run lists them). Whatever
fails, and wherever:

* the command ends in one clear line on stderr (what the system said, about which path,
  and what to do) and exit 0, 1 or 2: never a traceback, never an internal error;
* the next command recovers, and the project is as before the operation or as after it,
  with every original byte in place or in the trash and the manifest agreeing.

Without strace the sweep is skipped; the faults that need no strace — a full tmpfs, a
trash on another file system, a read-only directory — are in test_apply.py,
test_compact.py and below.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from artifacts_tasks import cli

from . import harness
from .harness import run
from .projects import OPERATIONS, check_recovered, copy, finish, prepare

STRACE = shutil.which("strace")
# Each errno, and the calls it is injected into one at a time.
FAULTS = {
    "EIO": ["fsync", "syncfs"],
    "ENOSPC": ["write", "mkdirat"],
    "EMFILE": ["openat"],
    "EACCES": ["openat", "mkdirat", "renameat", "unlinkat"],
    "EXDEV": ["renameat"],
}
SYSCALLS = sorted({s for calls in FAULTS.values() for s in calls})
PER_CALL = 3  # positions tried per (errno, call): the first, the last and one between


def _strace_works() -> bool:
    if STRACE is None:
        return False
    probe = subprocess.run(
        [STRACE, "-f", "-qq", "-o", os.devnull, "-e", "inject=getpid:error=EPERM", "true"],
        capture_output=True,
    )
    return probe.returncode == 0  # ptrace may be refused in a container


needs_strace = pytest.mark.skipif(not _strace_works(), reason="strace cannot trace here")


def _cli(root: Path, argv: list[str], strace: list[str]) -> subprocess.CompletedProcess[str]:
    # The Nth openat must be the same call in the traced run and in the injected one: no
    # run writes bytecode (_calls warms the cache first), and sets iterate in one order.
    env = {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0"}
    return harness.run_subprocess(root, *argv, prefix=strace, env=env)


def _calls(root: Path, argv: list[str], trace: Path) -> dict[str, list[int]]:
    """For each call the sweep fails: the ordinal numbers of those touching the project."""
    assert STRACE
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(Path(cli.__file__).parent)], check=True
    )
    done = _cli(
        root,
        argv,
        [STRACE, "-f", "-qq", "-y", "-o", str(trace), "-e", f"trace={','.join(SYSCALLS)}"],
    )
    assert done.returncode == 0, done.stderr
    seen: dict[str, int] = {}
    touching: dict[str, list[int]] = {s: [] for s in SYSCALLS}
    main_pid = ""
    for line in trace.read_text(errors="replace").splitlines():
        m = re.match(r"(\d+)\s+(\w+)\(", line)
        if not m or m.group(2) not in touching:
            continue
        main_pid = main_pid or m.group(1)
        if m.group(1) != main_pid:  # `when=N` counts the calls of one process
            continue
        name = m.group(2)
        seen[name] = n = seen.get(name, 0) + 1
        if _touches(root, line):
            touching[name].append(n)
    return touching


def _touches(root: Path, line: str) -> bool:
    """Whether a traced call names the project: `-y` shows the working directory on every
    AT_FDCWD, so a path or an fd must name the root (relative paths start from its parent)."""
    call = re.sub(r"AT_FDCWD<[^>]*>", "AT_FDCWD", line)
    return str(root) in call or re.search(r'\(("|AT_FDCWD, ")artifacts\b', call) is not None


def _spread(ordinals: list[int]) -> list[int]:
    if len(ordinals) <= PER_CALL:
        return ordinals
    step = (len(ordinals) - 1) / (PER_CALL - 1)
    return sorted({ordinals[round(i * step)] for i in range(PER_CALL)})


@needs_strace
@pytest.mark.parametrize("name", list(OPERATIONS))
def test_an_injected_fault_ends_in_one_clear_line_and_the_next_command_recovers(
    shm_path: Path, name: str
) -> None:
    operation = OPERATIONS[name]
    pristine = prepare(shm_path / "pristine", operation)
    clean = copy(pristine, shm_path / "clean")
    calls = _calls(clean.root, clean.argv, shm_path / "calls.trace")
    after = harness.state(clean.root)

    n = 0
    for code_name, syscalls in FAULTS.items():
        for syscall in syscalls:
            for nth in _spread(calls[syscall]):
                n += 1
                case = copy(pristine, shm_path / f"f{n}")
                inject = f"inject={syscall}:error={code_name}:when={nth}"
                injected = shm_path / f"f{n}.trace"
                strace = [STRACE or "", "-f", "-qq", "-y", "-o", str(injected)]
                done = _cli(case.root, case.argv, [*strace, "-e", f"trace={syscall}", "-e", inject])
                what = (name, inject, done.returncode, done.stderr)
                # The fault struck, once, and at a call on the project.
                (hit,) = [x for x in injected.read_text().splitlines() if "(INJECTED)" in x]
                assert _touches(case.root, hit), (what, hit)
                assert done.returncode in (0, 1, 2), what
                assert "Traceback" not in done.stderr and "internal error" not in done.stderr, what
                errors = [
                    line for line in done.stderr.splitlines() if "error" in line.split(":")[0]
                ]
                assert len(errors) <= 1, what
                if done.returncode:
                    assert errors and os.strerror(getattr(errno, code_name)) in errors[0], what
                harness.count(f"faults.{code_name}")
                harness.count("faults")
                recovered = run(case.root, "list")
                assert recovered.code == 0, (what, recovered.err)
                # A run gc could not open is skipped, reported, and left whole in place.
                skipped = done.returncode == 0 and "Skipped" in done.stdout
                check_recovered(case, after, operation.whole and not skipped)
                finish(case, after)
    harness.count(f"faults.sweep.{name}", n)


# ---- real faults: a full disk, a directory the user may not write ------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs mounted at tmp_path/disk (root only; skipped elsewhere)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs mount(8) and root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


def _fill(disk: Path) -> Path:
    """Write a filler file until the file system is full; returns it (delete it to free)."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


@pytest.mark.parametrize(
    "argv",
    [["scan"], ["pin", "--on"], ["gc", "--apply", "--force"], ["compact", "--apply"]],
)
def test_a_full_disk_fails_in_one_line_and_the_work_completes_once_space_is_freed(
    small_disk: Path, argv: list[str]
) -> None:
    operation = OPERATIONS["gc --apply" if argv[0] == "gc" else "compact --apply"]
    case = prepare(small_disk / "project", operation)
    if argv[0] == "scan":  # something for the scan to write down
        (case.root / "bench" / "run_20250311_000000.md").write_text("Status: PASS\n")
    clean = copy(case, small_disk.parent / "clean")  # where the operation ends, off the disk
    if argv[0] == "pin":
        argv = [*argv, "--id", json.loads(run(case.root, "list", "--json").out)["entries"][0]["id"]]
    assert run(clean.root, *argv).code == 0
    after = harness.state(clean.root)

    filler = _fill(small_disk)
    full = run(case.root, *argv)
    assert full.code == 1, full.err
    (line,) = full.err.splitlines()
    assert "No space left on device" in line and "free some space" in line, line
    harness.count("faults.ENOSPC")
    harness.count("faults")
    harness.assert_no_loss(case.root, case.held)
    assert not (case.root / ".journal.json").exists() or argv[0] != "gc"

    filler.unlink()
    assert run(case.root, "list").code == 0
    check_recovered(case, after, whole=True)
    done = run(case.root, *argv)
    assert done.code == 0, done.err
    assert harness.state(case.root) == after
    harness.assert_clean(case.root)


SETPRIV = shutil.which("setpriv")


def test_a_directory_gc_may_not_write_fails_in_one_line_and_moves_nothing(shm_path: Path) -> None:
    """EACCES for real: a read-only family directory, and a process that mode bits bind
    (root gives up the capabilities that let it ignore them)."""
    if os.geteuid() == 0 and SETPRIV is None:
        pytest.skip("root ignores mode bits, and setpriv(1) is missing to give that up")
    case = prepare(shm_path / "project", OPERATIONS["gc --apply"])
    drop = (
        [SETPRIV or "", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--inh-caps=-all"]
        if os.geteuid() == 0
        else []
    )
    (case.root / "greenwall").chmod(0o555)
    try:
        denied = _cli(case.root, ["gc", "--apply", "--force"], drop)
        assert denied.returncode == 1, denied.stderr
        (line,) = denied.stderr.splitlines()
        assert "Permission denied" in line and "check the owner and mode" in line, line
        assert "back in place, nothing was lost" in line
        harness.count("faults.EACCES")
        harness.count("faults")
        assert harness.state(case.root) == case.before
        harness.assert_no_loss(case.root, case.held)
    finally:
        (case.root / "greenwall").chmod(0o755)
    assert _cli(case.root, ["gc", "--apply", "--force"], drop).returncode == 0
    harness.assert_clean(case.root)


def test_an_error_after_a_compacted_file_replaced_its_original_keeps_the_trash_copy(
    shm_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Monkeypatched, for machines without strace: the directory fsync right after a
    cleaned Markdown file replaced its original fails (EIO). The apply stops with exit 1,
    and the original stays in the trash — it once was dropped as if nothing had changed."""
    case = prepare(shm_path / "project", OPERATIONS["compact --apply"])
    real_fsync = os.fsync

    def failing_fsync(fd: int) -> None:
        caller = sys._getframe(1)  # compaction's own fsync of the directory of a .md file
        if (
            caller.f_code.co_name == "_apply_one"
            and str(caller.f_locals.get("name", "")).endswith(".md")
            and stat.S_ISDIR(os.fstat(fd).st_mode)
        ):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_fsync(fd)

    config = case.root.parent / "config" / "artifacts.yaml"
    monkeypatch.setattr(os, "fsync", failing_fsync)
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(
        ["--root", str(case.root), "--config", str(config), "--no-progress", "compact", "--apply"],
        out=out,
        err=err,
    )
    monkeypatch.undo()
    assert code == 1, err.getvalue()
    (line,) = err.getvalue().splitlines()
    assert "Input/output error" in line and "check it (dmesg)" in line, line
    harness.count("faults.EIO")
    harness.count("faults")
    assert run(case.root, "list").code == 0
    harness.assert_no_loss(case.root, case.held)
    harness.assert_clean(case.root)
    cleaned = [
        rel for rel, data in harness.originals(case.root).items() if data.startswith(b"# gw 1")
    ]
    assert cleaned, "the fault came after a Markdown file was cleaned in place"
    assert list((case.root / ".trash").glob(f"*/{cleaned[0]}")), "and its original is kept"
