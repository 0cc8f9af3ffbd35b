"""gc plan budget (DESIGN §10): planning 100,000 entries takes under 1 s.

    python bench/bench_plan.py [--entries 100000] [--repeat 3]

Builds a manifest of N one-file runs spread over the five families (a run a minute,
1 in 7 failing) in memory and times `gc.plan` (pure: policy + safety rules + reasons)
with the built-in rules and with every bucket rule on. Also times the JSON rendering.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime, timedelta

from artifacts_tasks import gc
from artifacts_tasks.config import DEFAULT_FAMILIES, build_config
from artifacts_tasks.families import entry_id_hash
from artifacts_tasks.manifest import Entry, FileRecord, Manifest

FAMILIES = list(DEFAULT_FAMILIES)
NOW = datetime(2025, 9, 6, tzinfo=UTC)
ALL_RULES = {
    "keep": 10,
    "keep_daily": 7,
    "keep_weekly": 4,
    "keep_monthly": 12,
    "keep_yearly": 3,
    "keep_within": "30d",
}


def manifest(n: int) -> Manifest:
    entries = []
    for i in range(n):
        family, key = FAMILIES[i % len(FAMILIES)], f"run{i}"
        record = FileRecord(f"{family}/r{i}.md", 100, 0, i, 0, "0" * 32, "pass")
        entries.append(
            Entry.of(
                entry_id_hash(family, family, key)[:10],
                family,
                family,
                key,
                NOW - timedelta(minutes=i),
                "run_key",
                "fail" if i % 7 == 0 else "pass",
                False,
                (record,),
            )
        )
    return Manifest(NOW, tuple(entries), "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    m = manifest(args.entries)
    print("| rules | plan (s) | delete | JSON (s) |\n|---|---:|---:|---:|")
    for label, retention in (
        ("built-in (keep N)", {}),
        (
            "keep + daily/weekly/monthly/yearly + within",
            {"retention": {f: ALL_RULES for f in FAMILIES}},
        ),
    ):
        config = build_config(retention, "bench")
        times, json_times = [], []
        for _ in range(args.repeat):
            start = time.perf_counter()
            p = gc.plan(m, config, now=NOW)
            times.append(time.perf_counter() - start)
            start = time.perf_counter()
            gc.plan_json(p)
            json_times.append(time.perf_counter() - start)
        print(
            f"| {label} | {statistics.median(times):.2f} | {len(p.delete):,} | "
            f"{statistics.median(json_times):.2f} |"
        )


if __name__ == "__main__":
    main()
