"""Write a realistic, deterministic tree of CryptoRun verification artifacts."""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

DEFAULT_END = datetime(2025, 9, 6, 14, 30, 22, tzinfo=UTC)
FAMILIES = ("proofs", "bench", "smoke90", "explain", "greenwall")
# family -> (directory, jsonl/md prefix, json prefix or None, markdown title)
LAYOUT: dict[str, tuple[str, str, str | None, str]] = {
    "proofs": ("microstructure/proofs", "proof", None, "Microstructure Proof"),
    "bench": ("bench", "topgainers", "p99", "Top Gainers Benchmark"),
    "smoke90": ("smoke90", "smoke90", "backtest", "Smoke90 Backtest"),
    "explain": ("explain_delta", "explain", None, "Explain Delta Report"),
    "greenwall": ("greenwall", "greenwall", "verification", "Green Wall Verification"),
}
NIGHTLY_DIR = "nightly/bench"
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "ADAUSDT", "AVAXUSDT", "LINKUSDT", "DOTUSDT", "XRPUSDT")
VENUES = ("binance", "okx", "coinbase", "kraken")
ENDPOINTS = ("/scan/momentum", "/scan/dip", "/regime", "/explain", "/health")
FACTORS = ("momentum_core", "technical_residual", "volume_residual", "quality_residual", "social")
COMPONENTS = ("unit_tests", "microstructure", "smoke90", "p99_latency", "explain_delta", "lint")
STATUS_STYLES = ("**Status:** {}", "Status: {}", "**Status**: {}")
# unmanaged files a scanner must cope with: (path, text, days before the end time)
EXTRAS = (
    ("README.txt", "CryptoRun verification artifacts.\nGenerated sample; do not edit.\n", 0),
    ("bench/notes.txt", "Bench host: c6i.2xlarge, 8 vCPU.\nTarget p99 <= 300 ms.\n", 0),
    ("bench/baseline.md", "# Top Gainers Baseline\n\n**Status:** PASS\n\n- p99 <= 300 ms\n", 30),
)
Row = dict[str, Any]
_UTIME_FD = os.utime in os.supports_fd


def _iso(when: datetime) -> str:
    """Format a UTC datetime as ISO 8601 with a Z suffix."""
    return when.isoformat().replace("+00:00", "Z")


_dumps = json.JSONEncoder(separators=(",", ":")).encode


def _row_proofs(rng: random.Random, i: int, when: datetime, bad: bool) -> Row:
    """One microstructure gate check."""
    return {
        "ts": _iso(when + timedelta(seconds=i)),
        "symbol": SYMBOLS[i % len(SYMBOLS)],
        "venue": rng.choice(VENUES),
        "spread_bps": round(rng.uniform(60, 140) if bad else rng.uniform(0.8, 12), 1),
        "depth_usd": round(rng.uniform(20e3, 95e3) if bad else rng.uniform(1e5, 9e5), 1),
        "vadr": round(rng.uniform(0.9, 1.7) if bad else rng.uniform(1.75, 3.2), 2),
        "check": ("spread", "depth", "vadr")[i % 3],
        "status": "fail" if bad else "pass",
    }


def _row_bench(rng: random.Random, i: int, when: datetime, bad: bool) -> Row:
    """One latency sample."""
    p50 = rng.uniform(18, 90)
    return {
        "ts": _iso(when + timedelta(seconds=i * 2)),
        "endpoint": ENDPOINTS[i % len(ENDPOINTS)],
        "p50_ms": round(p50, 1),
        "p99_ms": round(rng.uniform(320, 900) if bad else p50 * rng.uniform(2.0, 3.2), 1),
        "rps": round(rng.uniform(40, 260), 1),
    }


def _row_smoke90(rng: random.Random, i: int, when: datetime, bad: bool) -> Row:
    """One per-day, per-symbol backtest row."""
    cands = rng.randint(4, 30)
    hits = rng.randint(0, cands // 3) if bad else rng.randint(cands // 3, cands)
    return {
        "date": (when - timedelta(days=90 - i // len(SYMBOLS) % 90)).date().isoformat(),
        "symbol": SYMBOLS[i % len(SYMBOLS)],
        "window": rng.choice(("4h", "12h", "24h")),
        "candidates": cands,
        "hits": hits,
        "hit_rate": round(hits / cands, 3),
        "return_pct": round(rng.gauss(-1.5 if bad else 1.2, 2.5), 2),
    }


def _row_explain(rng: random.Random, i: int, when: datetime, bad: bool) -> Row:
    """One factor attribution delta against the baseline."""
    base = rng.uniform(-8, 25)
    delta = rng.uniform(2.5, 9) * rng.choice((-1, 1)) if bad else rng.uniform(-1.8, 1.8)
    return {
        "symbol": SYMBOLS[i // len(FACTORS) % len(SYMBOLS)],
        "factor": FACTORS[i % len(FACTORS)],
        "baseline": round(base, 3),
        "current": round(base + delta, 3),
        "delta": round(delta, 3),
        "tolerance": 2.0,
        "status": "fail" if bad else "pass",
    }


def _row_greenwall(rng: random.Random, i: int, when: datetime, bad: bool) -> Row:
    """One component check result."""
    comp = COMPONENTS[i % len(COMPONENTS)]
    return {
        "ts": _iso(when + timedelta(seconds=i * 3)),
        "component": comp,
        "check": f"{comp}/case_{i:03d}",
        "duration_ms": rng.randint(3, 2400),
        "status": "fail" if bad else "pass",
    }


ROWS: dict[str, Callable[[random.Random, int, datetime, bool], Row]] = {
    "proofs": _row_proofs,
    "bench": _row_bench,
    "smoke90": _row_smoke90,
    "explain": _row_explain,
    "greenwall": _row_greenwall,
}


def _metrics(family: str, rng: random.Random, rows: list[Row]) -> Row:
    """Aggregate metrics of a run, shared by its summary, JSON and markdown."""
    if family == "bench":
        p99 = max(r["p99_ms"] for r in rows)
        return {"samples": len(rows), "p99_ms": p99, "target_p99_ms": 300.0}
    if family == "smoke90":
        cands = sum(r["candidates"] for r in rows)
        hit_rate = round(sum(r["hits"] for r in rows) / max(cands, 1), 3)
        return {"window_days": 90, "rows": len(rows), "hit_rate": hit_rate, "candidates": cands}
    if family == "explain":
        worst = max(rows, key=lambda r: abs(r["delta"]))
        return {"rows": len(rows), "max_abs_delta": abs(worst["delta"]), "worst": worst["factor"]}
    failed = sum(r["status"] == "fail" for r in rows)
    return {"checks": len(rows), "failed": failed, "duration_s": round(rng.uniform(4, 600), 1)}


def _json_doc(
    rng: random.Random, family: str, token: str, m: Row, rows: list[Row], ok: bool
) -> Row:
    """Build the run's JSON report with one of several status conventions."""
    doc: Row = {"run_id": token, "family": family, **m}
    if family == "bench":
        doc["endpoints"] = {
            ep: {"samples": len(rs), "p99_ms": max(r["p99_ms"] for r in rs)}
            for ep in ENDPOINTS
            if (rs := [r for r in rows if r["endpoint"] == ep])
        }
    elif family == "smoke90":
        doc.update(
            sharpe=round(rng.uniform(0.4, 2.6), 2), max_drawdown_pct=round(-rng.uniform(3, 22), 2)
        )
    else:
        bad = {r["component"] for r in rows if r["status"] == "fail"}
        doc["components"] = {c: "fail" if c in bad else "pass" for c in COMPONENTS}
    style = rng.random()
    if style < 0.7:
        doc["status"] = "pass" if ok else "fail"
    elif style < 0.85:
        doc["result"] = "PASSED" if ok else "FAILED"
    else:
        doc["passed"] = ok
    return doc


def _markdown(title: str, rng: random.Random, token: str, ok: bool, m: Row, rows: list[Row]) -> str:
    """Render the run's markdown report."""
    out = [f"{title}\n{'=' * len(title)}" if rng.random() < 0.15 else f"# {title}", ""]
    out += [rng.choice(STATUS_STYLES).format("PASS" if ok else "FAIL"), "", f"Run: `{token}`", ""]
    out += ["## Summary", "", "| Metric | Value |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in m.items()]
    cols = list(rows[0])
    out += ["", "## Checks", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows[:8]]
    if rng.random() < 0.2:
        out += ["", "## Known Issues"]
    out += ["", "## Notes", ""]
    out.append("- All gates green." if ok else "- Gate failures detected; see JSONL for details.")
    return "\n".join(out) + "\n"


@dataclass(frozen=True)
class SampleSummary:
    """What `generate` wrote."""

    root: Path
    runs: int
    files: int
    bytes: int
    families: dict[str, int]


class _Writer:
    """Accumulates counts while writing files with fixed mtimes."""

    def __init__(self, root: Path, file_kb: float | None) -> None:
        """Remember the root and size policy."""
        self.root, self.file_kb, self.files, self.bytes = root, file_kb, 0, 0

    def put(self, rel: str, text: str, when: datetime) -> None:
        """Write one file and set its mtime."""
        path = os.path.join(self.root, rel)  # cheaper than Path joins for 50,000 files
        data, done, stamp = memoryview(text.encode()), 0, int(when.timestamp())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:  # os.open/os.write: markedly cheaper than open() when writing 50,000 files
            while done < len(data):
                done += os.write(fd, data[done:])
            os.utime(fd if _UTIME_FD else path, (stamp, stamp))
        finally:
            os.close(fd)
        self.files += 1
        self.bytes += len(data)

    def run(
        self, family: str, folder: str, rng: random.Random, when: datetime, token: str, ok: bool
    ) -> None:
        """Write every file of one run."""
        _, prefix, json_prefix, title = LAYOUT[family]
        kb = self.file_kb * rng.uniform(0.8, 1.2) if self.file_kb else rng.triangular(2, 60, 20)
        make = ROWS[family]
        rows = [make(rng, 0, when, not ok and rng.random() < 0.1)]
        count = max(3, round(kb * 1024 / (len(_dumps(rows[0])) + 1)))
        rows += [
            make(rng, i, when, not ok and (i % 7 == 1 or rng.random() < 0.1))
            for i in range(1, count)
        ]
        m = _metrics(family, rng, rows)
        summary = {"type": "summary", "run_id": token, **m, "status": "pass" if ok else "fail"}
        # one encoder call per file (rows are flat, so "},{" only occurs between records)
        body = _dumps(rows)[1:-1].replace("},{", "}\n{")
        self.put(f"{folder}/{prefix}_{token}.jsonl", f"{body}\n{_dumps(summary)}\n", when)
        self.put(f"{folder}/{prefix}_{token}.md", _markdown(title, rng, token, ok, m, rows), when)
        if json_prefix:
            doc = _json_doc(rng, family, token, m, rows, ok)
            self.put(f"{folder}/{json_prefix}_{token}.json", json.dumps(doc, indent=2) + "\n", when)


def _times(rng: random.Random, end: datetime, n: int) -> list[datetime]:
    """Newest-first run times spaced 6-30 hours apart, whole seconds."""
    when = end - timedelta(seconds=rng.randint(0, 3 * 3600))
    out = []
    for _ in range(n):
        out.append(when)
        when -= timedelta(seconds=rng.randint(6 * 3600, 30 * 3600))
    return out


def nightly_runs(runs_per_family: int) -> int:
    """Number of runs in `nightly/bench` for a given runs_per_family."""
    return max(1, runs_per_family // 3)


def expected_files(runs_per_family: int) -> int:
    """Total files `generate` writes for a given runs_per_family."""
    return 13 * runs_per_family + 3 * nightly_runs(runs_per_family) + 6


def runs_for_files(files: int) -> int:
    """The runs_per_family whose tree comes closest to `files` files in total."""
    rpf = max(1, (files - 6) // 14)
    while expected_files(rpf) < files:
        rpf += 1
    below = max(1, rpf - 1)
    return below if files - expected_files(below) < expected_files(rpf) - files else rpf


def generate(
    root: Path,
    *,
    runs_per_family: int = 15,
    seed: int = 7,
    end: datetime | None = None,
    file_kb: float | None = None,
) -> SampleSummary:
    """Write the sample tree under `root` (created; must be empty) and summarize it."""
    if runs_per_family < 1 or (file_kb is not None and file_kb <= 0):
        raise ValueError("runs_per_family must be >= 1 and file_kb > 0")
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(f"{root} exists and is not an empty directory")
    end = end or DEFAULT_END
    end = (end.astimezone(UTC) if end.tzinfo else end.replace(tzinfo=UTC)).replace(microsecond=0)
    for folder, *_ in LAYOUT.values():
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / NIGHTLY_DIR).mkdir(parents=True, exist_ok=True)
    w = _Writer(root, file_kb)
    fams: dict[str, int] = {}
    for family in FAMILIES:
        rng = random.Random(f"{seed}:{family}")
        folder = LAYOUT[family][0]
        for k, when in enumerate(_times(rng, end, runs_per_family)):
            ok = rng.random() >= 0.2 and not (family == "bench" and k == 0)
            w.run(family, folder, rng, when, when.strftime("%Y%m%d_%H%M%S"), ok)
        fams[family] = runs_per_family
    rng = random.Random(f"{seed}:nightly")
    day = end.replace(hour=2, minute=0, second=0)
    for k in range(nightly_runs(runs_per_family)):
        when = day - timedelta(days=k + 1) + timedelta(seconds=rng.randint(0, 3599))
        w.run("bench", NIGHTLY_DIR, rng, when, when.strftime("%Y%m%d_%H%M%S"), rng.random() >= 0.2)
    fams["bench"] += nightly_runs(runs_per_family)
    iso = (end - timedelta(days=5)).replace(hour=12, minute=0, second=0)
    w.run("greenwall", "greenwall", rng, iso, iso.strftime("%Y-%m-%dT%H-%M-%SZ"), True)
    fams["greenwall"] += 1
    for rel, text, days in EXTRAS:
        w.put(rel, text, end - timedelta(days=days))
    return SampleSummary(root, sum(fams.values()), w.files, w.bytes, fams)


def _human(n: int) -> str:
    """Format a byte count like `4.2M`."""
    size, unit = float(n), 0
    while size >= 1024 and unit < 3:
        size, unit = size / 1024, unit + 1
    return f"{n}B" if unit == 0 else f"{size:.1f}{'KMG'[unit - 1]}"


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(prog="python -m artifacts_tasks.sample", description=__doc__)
    ap.add_argument("dir", type=Path, help="output directory (created; must be empty)")
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--runs-per-family", type=int, default=15, metavar="N")
    group.add_argument("--files", type=int, metavar="N", help="aim for about N files in total")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--end", type=datetime.fromisoformat, default=DEFAULT_END, metavar="ISO")
    ap.add_argument("--file-kb", type=float, default=None, metavar="KB")
    args = ap.parse_args(argv)
    root: Path = args.dir
    rpf, kb = args.runs_per_family, args.file_kb
    if args.files is not None:
        rpf, kb = runs_for_files(args.files), kb or 1.5
    try:
        s = generate(root, runs_per_family=rpf, seed=args.seed, end=args.end, file_kb=kb)
    except (FileExistsError, ValueError) as exc:
        print(f"sample: refusing: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {s.runs} runs, {s.files} files, {_human(s.bytes)} to {root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
