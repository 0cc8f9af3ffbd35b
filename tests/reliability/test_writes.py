"""Every small atomic write a command makes (manifest, its backup, pins) survives a SIGKILL
at its worst moment: the temp file complete, the old file still in place."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from artifacts_tasks.sample import generate

from . import harness


def cli(root: Path, *argv: str, failpoint: str = "") -> subprocess.CompletedProcess[str]:
    return harness.run_subprocess(root, *argv, failpoint=failpoint)


def temps(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".tmp-" in p.name]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "artifacts"
    generate(root, runs_per_family=12, seed=5)
    assert cli(root, "scan").returncode == 0
    return root


@pytest.mark.parametrize(
    ("argv", "point"),
    [
        (["scan"], "write:.manifest.json"),
        (["scan"], "write:.manifest.backup.json"),
        (["pin", "--on"], "write:.pins.json"),
        (["pin", "--on"], "write:.manifest.json"),
        (["gc", "--apply", "--force"], "write:.journal.json:2"),  # the commit's rewrite
    ],
)
def test_a_kill_mid_write_leaves_the_old_or_the_new_file(
    root: Path, argv: list[str], point: str
) -> None:
    entries = json.loads(cli(root, "list", "--json").stdout)["entries"]
    if argv[0] == "pin":
        argv = [*argv, "--id", entries[-1]["id"]]
    else:  # give the scan something to write
        (root / "bench" / "extra_20250907_000000.md").write_text("Status: PASS\n")
    killed = cli(root, *argv, failpoint=point)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert temps(root)  # the kill came with a complete temp file beside the old one
    after = cli(root, "list", "--json")
    assert after.returncode == 0, after.stderr
    assert temps(root) == []  # removed by the next command
    assert cli(root, "verify").returncode == 0
    listed = json.loads(after.stdout)["entries"]
    if argv[0] == "pin":  # the pin either took or not, and everything agrees
        pinned = [e["id"] for e in listed if e["pinned"]]
        assert pinned in ([], [entries[-1]["id"]])
    assert not (root / ".journal.json").exists()
