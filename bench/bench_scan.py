"""Scan budgets (DESIGN §10) as ratios to baselines measured in the same run.

    python bench/bench_scan.py [--files 50000] [--repeat 5] [--json bench/results/scan.json]

Writes a sample tree of about --files files to a temporary directory, then runs, as whole
processes (start-up included) and interleaved so that machine noise hits both sides:

  cold scan  `cryptorun artifacts scan --force`, manifest removed  vs  baselines.py hash
  warm scan  `cryptorun artifacts scan`, nothing changed            vs  baselines.py walk
  doit scan  `doit scan` when up to date                            vs  `doit list`

Reports the median seconds, the ratio, the budget, and each process's peak memory.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
BUDGETS = {"cold scan": 1.5, "warm scan": 3.0, "doit scan": 2.0}


def timed(argv: list[str], cwd: Path) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one process."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {err}")
    return elapsed, usage.ru_maxrss


def measure(
    pairs: dict[str, tuple[list[str], list[str]]],
    project: Path,
    repeat: int,
    before: dict[str, list[str]],
) -> dict[str, dict[str, float]]:
    results = {}
    for name, (ours, base) in pairs.items():
        ours_t, base_t, ours_m, base_m = [], [], [], []
        for _ in range(repeat):
            for argv in [before.get(name)] if before.get(name) else []:
                subprocess.run(argv, cwd=project, check=True, capture_output=True)
            t, m = timed(ours, project)
            ours_t.append(t)
            ours_m.append(m)
            t, m = timed(base, project)
            base_t.append(t)
            base_m.append(m)
        ours_s, base_s = statistics.median(ours_t), statistics.median(base_t)
        results[name] = {
            "ours_s": round(ours_s, 3),
            "baseline_s": round(base_s, 3),
            "ratio": round(ours_s / base_s, 2),
            "budget": BUDGETS[name],
            "ours_peak_mib": round(max(ours_m) / 1024, 1),
            "baseline_peak_mib": round(max(base_m) / 1024, 1),
            "ours_all_s": [round(t, 3) for t in ours_t],
            "baseline_all_s": [round(t, 3) for t in base_t],
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=50000)
    parser.add_argument(
        "--file-kb",
        type=float,
        default=None,
        help="size of each JSONL file (default: the sample's small files)",
    )
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path, default=HERE / "results" / "scan.json")
    parser.add_argument("--keep", action="store_true", help="keep the temporary project")
    args = parser.parse_args()

    project = Path(tempfile.mkdtemp(prefix="bench-scan-"))
    try:
        root = project / "artifacts"
        sample = [sys.executable, "-m", "artifacts_tasks.sample", str(root)]
        sample += ["--files", str(args.files)]
        if args.file_kb:
            sample += ["--file-kb", str(args.file_kb)]
        subprocess.run(sample, check=True)
        (project / "config").mkdir()
        limit = args.files * 2
        (project / "config" / "artifacts.yaml").write_text(
            f"indexing:\n  max_files_per_scan: {limit}\n"
        )
        (project / "dodo.py").write_text(
            "from artifacts_tasks.tasks import *  # noqa: F403\n"
            'DOIT_CONFIG = {"dep_file": ".doit.json", "backend": "json"}\n'
        )
        files = sum(len(f) for _, _, f in os.walk(root))
        size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
        cryptorun = [str(BIN / "cryptorun"), "artifacts"]
        doit = [str(BIN / "doit")]
        baseline = [sys.executable, str(HERE / "baselines.py")]
        subprocess.run([*cryptorun, "scan"], cwd=project, check=True, capture_output=True)
        subprocess.run([*doit, "scan"], cwd=project, check=True, capture_output=True)
        pairs = {
            "cold scan": ([*cryptorun, "scan", "--force"], [*baseline, "hash", str(root)]),
            "warm scan": ([*cryptorun, "scan"], [*baseline, "walk", str(root)]),
            "doit scan": ([*doit, "scan"], [*doit, "list"]),
        }
        before = {
            "cold scan": ["rm", "-f", str(root / ".manifest.json")],
            "warm scan": [*cryptorun, "scan"],
        }
        results = measure(pairs, project, args.repeat, before)
        check = subprocess.run([*doit, "scan"], cwd=project, capture_output=True, text=True)
        assert check.stdout.startswith("-- scan"), "doit scan was not up to date"
    finally:
        if not args.keep:
            shutil.rmtree(project, ignore_errors=True)
        else:
            print(f"project kept in {project}")

    report = {
        "tree": {"files": files, "bytes": size},
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "results": results,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{files:,} files, {size / 2**20:.1f} MiB; median of {args.repeat}, whole processes\n")
    print("| measure | ours (s) | baseline (s) | ratio | budget | peak MiB ours / baseline |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        verdict = "" if r["ratio"] <= r["budget"] else " (over)"
        print(
            f"| {name} | {r['ours_s']} | {r['baseline_s']} | {r['ratio']}×{verdict} | "
            f"≤ {r['budget']}× | {r['ours_peak_mib']} / {r['baseline_peak_mib']} |"
        )


if __name__ == "__main__":
    main()
