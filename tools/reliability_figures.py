#!/usr/bin/env python3
"""Run the reliability suite and write its figures into docs/reliability.md.

    python3 dev.py reliability      # the same, after setting up .venv

Runs `pytest -n auto tests/reliability` with RELIABILITY_FIGURES pointing at a temporary
directory, where each test process leaves its counts (tests/reliability/harness.py), adds
them up, and rewrites docs/reliability.md. Nothing is written unless every test passes
and no byte was lost.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
DOC = HERE / "docs" / "reliability.md"


def measure() -> tuple[Counter[str], str, float]:
    with tempfile.TemporaryDirectory(prefix="reliability-figures-") as where:
        env = {**os.environ, "RELIABILITY_FIGURES": where}
        started = time.monotonic()
        pytest = [sys.executable, "-m", "pytest", "-n", "auto", "-p", "no:cacheprovider", "-rs"]
        done = subprocess.run(
            [*pytest, "tests/reliability"],
            cwd=HERE,
            env=env,
            capture_output=True,
            text=True,
        )
        took = time.monotonic() - started
        if done.returncode != 0:
            sys.stdout.write(done.stdout + done.stderr)
            sys.exit("reliability_figures: the suite failed; docs/reliability.md is unchanged")
        totals: Counter[str] = Counter()
        for path in Path(where).glob("*.json"):
            totals.update(json.loads(path.read_text()))
    summary = done.stdout.strip().splitlines()[-1].strip("= ")
    if totals["bytes_lost"]:
        sys.exit(f"reliability_figures: {totals['bytes_lost']} bytes lost; this is a bug")
    return totals, summary, took


def _n(value: int) -> str:
    return f"{value:,}"


def render(t: Counter[str], summary: str, took: float) -> str:
    ops = sorted(k.split(".", 1)[1] for k in t if k.startswith("sweep."))
    fault_ops = sorted(k.split(".", 2)[2] for k in t if k.startswith("faults.sweep."))
    errnos = sorted(k.split(".", 1)[1] for k in t if re.fullmatch(r"faults\.E[A-Z]+", k))
    strace = shutil.which("strace") is not None
    lines = [
        "# Reliability: the figures",
        "",
        "<!-- Written by tools/reliability_figures.py (`python3 dev.py reliability`); "
        "edit the script, not this page. -->",
        "",
        '"Nothing is ever lost" is a claim; these are the numbers behind it. The suite in',
        "`tests/reliability/` runs with every `python3 dev.py check`. This page is the",
        "record of one full run:",
        "",
        f"* when: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC;",
        f"* machine: {os.cpu_count()} cores, Python {platform.python_version()},",
        f"  {platform.system()} {platform.release()};",
        f"* strace: {'present' if strace else 'absent, so the strace sweep was skipped'};",
        f"* run as root: {'yes (tmpfs and capability tests ran)' if os.geteuid() == 0 else 'no'};",
        f"* time: {took:.0f} s;",
        f"* pytest: {summary}.",
        "",
        "| figure | count |",
        "|---|---:|",
        f"| SIGKILLs at a step of a writing operation (sweep) | {_n(t['kills'])} |",
        f"| second SIGKILLs during the recovery that followed | {_n(t['second_kills'])} |",
        f"| SIGKILLs of the real entry point (`python -m artifacts_tasks`) | "
        f"{_n(t['kills.subprocess'])} |",
        f"| recoveries checked (state as before or as after, nothing lost, manifest agrees) | "
        f"{_n(t['recoveries'])} |",
        f"| faults injected ({', '.join(errnos)}) | {_n(t['faults'])} |",
        f"| racing writers ({_n(t['races.rounds'])} rounds) | {_n(t['races.writers'])} |",
        f"| of which refused with exit 4 while another wrote | {_n(t['races.refused'])} |",
        f"| manifest reads during the races, none torn | {_n(t['races.reads'])} |",
        f"| model-based sequences (hypothesis) / invariant checks | "
        f"{_n(t['model.sequences'])} / {_n(t['model.checks'])} |",
        f"| hostile inputs tried | {_n(t['hostile'])} |",
        f"| original bytes checked after crashes and faults | {_n(t['bytes_checked'])} |",
        f"| **bytes lost** | **{_n(t['bytes_lost'])}** |",
        "",
        "## Where the kills and faults went",
        "",
        "| operation | kill cases (first and second) | faults injected |",
        "|---|---:|---:|",
    ]
    for op in sorted(set(ops) | set(fault_ops)):
        lines.append(f"| `{op}` | {_n(t['sweep.' + op])} | {_n(t['faults.sweep.' + op])} |")
    lines += [
        "",
        "| errno | injected |",
        "|---|---:|",
        *[f"| {e} | {_n(t['faults.' + e])} |" for e in errnos],
        "",
        "## What each part does",
        "",
        "* **Crash sweep** (`test_crash_sweep.py`). A traced run of each writing operation",
        "  (`ARTIFACTS_FAILPOINT_TRACE`) lists every failpoint it passes: scan's and pin's",
        "  atomic writes, each step of gc's apply, restore, purge, compaction and the restore",
        "  that undoes a compaction. A fresh copy of the project is killed with SIGKILL at",
        "  each (`ARTIFACTS_FAILPOINT=name:N`). Then the recovery that the next command runs",
        "  is traced too, and killed at each of its steps. After every recovery: every",
        "  original byte is in place or in a recorded trash folder (by checksum); the runs gc",
        "  must protect are in place; the project is as before the operation or as after it",
        "  (gc, restore, pin and scan as a whole; compaction and purge file by file); the",
        "  manifest parses and names exactly the files on disk with their checksums; no",
        "  journal or temp file is left; and running the operation again finishes it.",
        "* **Real entry point** (`test_crash.py`, `test_writes.py`). The same kills through",
        "  `python -m artifacts_tasks` in a subprocess, with the messages the user reads, a",
        "  crashed tree copied elsewhere (new mtimes), a directory swapped for a symlink",
        "  before recovery, and kills in the middle of every small atomic write.",
        "* **Injected faults** (`test_faults.py`). `strace --inject` fails one system call",
        "  with EIO (fsync, syncfs), ENOSPC (write, mkdirat), EMFILE (openat), EACCES",
        "  (openat, mkdirat, renameat, unlinkat) or EXDEV (renameat), at the first, a middle",
        "  and the last call that touches the project. No code under test changes. The",
        "  command must end with one clear line and exit 0, 1 or 2, never a traceback. The",
        "  next command must recover to before or after. Without strace, a full 4 MiB tmpfs,",
        "  a read-only directory (root gives up its capabilities with setpriv) and a",
        "  monkeypatched fsync still run.",
        "* **Races** (`test_races.py`). Writers start at once, three times: gc --apply,",
        "  compact --apply, two pins, scan --force, trash purge, and from the second round a",
        "  restore. A reader parses the manifest all the while. One writes at a time, the",
        "  others exit 4 naming the holder, and no read is torn.",
        "* **Model-based** (`test_model.py`). A hypothesis state machine adds runs, edits",
        "  files, pins and unpins, applies gc, restores, compacts, purges and moves the clock.",
        "  It checks every step against a model of each file's original bytes.",
        "* **Hostile inputs** (`test_hostile.py`). A catalogue of inputs, each with its exit",
        "  code and the words of its one line:",
        "  * configs that are not YAML, hold a key twice or a Python tag, are a billion laughs,",
        "    are not UTF-8, or are a directory;",
        "  * manifests, pins, journals and trash records that are cut short, random, or forged",
        "    with a valid checksum to reach outside the tree;",
        "  * ids that are paths;",
        "  * names with newlines, bytes that are not UTF-8, a leading dash, 255 bytes, or glob",
        "    characters;",
        "  * symlinks swapped in after the scan;",
        "  * a 16 MB JSONL line, and binary files with artifact extensions;",
        "  * a family of 100,000 files (refused past `indexing.max_files_per_scan`, then",
        "    scanned and planned).",
        "",
        "  Nothing under the tree is lost, nothing outside it is touched, and a refusal",
        "  (exit 2) changes nothing.",
        "",
        "## Defects found by these tests and their review",
        "",
        "* An error after a cleaned Markdown file had replaced its original (EIO on the",
        '  directory fsync) was taken for "left as it was", and the original\'s trash copy',
        "  was dropped. Fixed: once replaced, an error stops the apply and the copy stays.",
        "* syncfs(2) failing with a write-back error was papered over with sync(2). It is",
        "  now raised before the commit point.",
        "* A disk-wide error (EIO, ENOSPC, EMFILE) while gc or compaction checked one run",
        "  or file skipped it and exited 0. Now the apply stops (exit 1), undone.",
        "* A config that was a YAML bomb was expanded until the kernel killed the process;",
        "  it is now refused in microseconds. A config nested 400 deep, or with a list for",
        "  a key, was an internal error (exit 3); a config that was not UTF-8 got two lines.",
        "  Each now gets one config error line (exit 2).",
        "* Finding the C library forked `ldconfig` in every process that synced; the",
        "  process's own symbols serve, with no child process.",
        '* An exit-4 message could say "holder unknown" when the lock changed hands at',
        "  that instant.",
        "",
        "## Rerun it",
        "",
        "    python3 dev.py reliability    # the suite, then this page rewritten",
        "    .venv/bin/python -m pytest -n auto tests/reliability    # the suite alone",
        "",
        "Run as root to include the tmpfs and capability tests, and install strace for the",
        "injected faults. The suite refuses to write this page if a test fails or a byte",
        "is lost.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    totals, summary, took = measure()
    DOC.write_text(render(totals, summary, took))
    print(f"wrote {DOC.relative_to(HERE)}: {summary}")


if __name__ == "__main__":
    main()
