"""gc apply (DESIGN §10): moves by rename, never copies; files/s for a 10,000-run apply.

    python bench/bench_apply.py [--runs 10000] [--files-per-run 2]

Builds a tree of N+1 runs in one family (`keep: 1`), scans it, then times, as whole
processes in the same run:
  * baseline: a bare Python loop renaming the same number of files (same sizes, same
    layout) into another directory of the same file system, with one syncfs at the end;
  * `cryptorun artifacts gc --apply --force`: lock, refresh, plan, validation, journal,
    records, renames, report, commit, manifest refresh.
Prints both, the ratio, and files/s, and checks nothing was copied: every trashed file
still has the inode it had in the tree.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

BASELINE = """
import os, sys, ctypes, ctypes.util
src, dst = sys.argv[1], sys.argv[2]
os.mkdir(dst)
for name in os.listdir(src):
    os.rename(os.path.join(src, name), os.path.join(dst, name))
fd = os.open(dst, os.O_RDONLY)
ctypes.CDLL(ctypes.util.find_library("c")).syncfs(fd)
"""


def build(root: Path, runs: int, per_run: int) -> int:
    bench = root / "bench"
    bench.mkdir(parents=True)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    n = 0
    for i in range(runs + 1):
        stamp = (start + timedelta(minutes=i)).strftime("%Y%m%d_%H%M%S")
        for k, ext in enumerate((".md", ".jsonl", "_p99.json")[:per_run]):
            name = f"run_{stamp}{ext}" if k < 2 else f"p99_{stamp}.json"
            (bench / name).write_text(f"Status: PASS\n{i}\n")
            n += 1
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--files-per-run", type=int, default=2, choices=(1, 2, 3))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        work = Path(tmp)
        # Baseline tree: the same files, renamed by a bare loop.
        base = work / "base" / "artifacts"
        files = build(base, args.runs, args.files_per_run)
        os.sync()  # the tree's own writes are not the rename loop's to flush
        t = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", BASELINE, str(base / "bench"), str(base / "moved")], check=True
        )
        baseline = time.perf_counter() - t

        root = work / "tool" / "artifacts"
        build(root, args.runs, args.files_per_run)
        (work / "tool" / "config").mkdir()
        (work / "tool" / "config" / "artifacts.yaml").write_text("retention:\n  bench: {keep: 1}\n")
        cli = [sys.executable, "-m", "artifacts_tasks", "--no-progress"]
        subprocess.run([*cli, "scan"], cwd=work / "tool", check=True, capture_output=True)
        inodes = {p.name: p.stat().st_ino for p in (root / "bench").iterdir()}
        os.sync()
        t = time.perf_counter()
        done = subprocess.run(
            [*cli, "gc", "--apply", "--force", "--json"],
            cwd=work / "tool",
            check=True,
            capture_output=True,
            text=True,
        )
        elapsed = time.perf_counter() - t
        moved = json.loads(done.stdout)["applied"]["moved"]
        moved_files = sum(m["file_count"] for m in moved)
        trashed = list((root / ".trash").glob("*/bench/*"))
        same_inode = sum(inodes.get(p.name) == p.stat().st_ino for p in trashed)
        result = {
            "runs_moved": len(moved),
            "files_moved": moved_files,
            "baseline_rename_loop_s": round(baseline, 3),
            "gc_apply_s": round(elapsed, 3),
            "ratio": round(elapsed / baseline, 2),
            "files_per_s": round(moved_files / elapsed),
            "baseline_files_per_s": round(files / baseline),
            "moved_files_with_their_inode": same_inode,  # a copy would have a new one
        }
    print(json.dumps(result, indent=2))
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "apply.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
