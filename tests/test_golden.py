"""`list` and `gc` print what the mission shows, column for column, and stay seed-exact.

The mission's examples are copied below; the golden files are this tool's output on the
seeded sample tree (`python -m artifacts_tasks.sample DIR`, seed 7) with its newest run
pinned. Regenerate them on purpose with `UPDATE_GOLDEN=1 pytest tests/test_golden.py`.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from artifacts_tasks.sample import generate

from .conftest import run_main

GOLDEN = Path(__file__).parent / "golden"

MISSION_LIST = """\
ID           FAMILY     TIMESTAMP           SIZE     STATUS PINNED FILES
a1b2c3d4     proofs     2025-09-06 14:30:22 2.1M     pass*+ 📌     3
e5f6g7h8     bench      2025-09-06 14:25:15 856K     fail*         2
i9j0k1l2     smoke90    2025-09-06 14:20:08 4.3M     pass          5

Legend: * = last run, + = last pass, 📌 = pinned
"""
MISSION_GC = """\
GC Plan Summary (DryRun: true)
Total Entries: 47
To Delete: 12 entries (8.4M, 23 files)
To Keep: 35 entries
Safety: 5 pinned, 5 last-pass, 5 last-run kept

By Family:
  proofs: keep 10/15, delete 2.1M
  bench: keep 8/12, delete 3.2M
  smoke90: keep 8/8, delete 0B
  explain: keep 9/12, delete 3.1M
"""


def shape(line: str) -> str:
    """A line with its values blanked: ids, names, numbers, sizes and times become `_`."""
    line = re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", "T" * 19, line)
    line = re.sub(r"\b[0-9a-z]{8}\b(?=\s{5})", "I" * 8, line)  # an id in the id column
    line = re.sub(r"\d+(\.\d)?[BKMGT]\b", "S", line)
    return re.sub(r"\d+", "N", line)


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("golden") / "artifacts"
    generate(root, runs_per_family=15, seed=7)
    newest = json.loads(run_main("--root", root, "list", "--json").out)["entries"][0]["id"]
    assert run_main("--root", root, "pin", "--id", newest, "--on").code == 0
    return root


@pytest.mark.parametrize(("name", "argv"), [("list", ["list"]), ("gc", ["gc"])])
def test_output_is_seed_exact(sample: Path, name: str, argv: list[str]) -> None:
    r = run_main("--root", sample, *argv)
    assert r.code == 0, r
    golden = GOLDEN / f"{name}.txt"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(r.out)
    assert r.out == golden.read_text()


def columns(line: str, header: str) -> list[str]:
    """The line cut at the header's column starts (📌 takes two columns on a terminal)."""
    line = line.replace("📌", "PP")
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    for start in starts[1:]:
        assert line[start - 1] == " ", (line, start)  # each column starts after a space
    return [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]


def test_list_lines_have_the_missions_columns(sample: Path) -> None:
    ours = run_main("--root", sample, "list").out.splitlines()
    theirs = MISSION_LIST.splitlines()
    header = theirs[0]
    assert ours[0] == header  # to the space
    row = re.compile(r"[0-9a-f]{8}|\w+|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d|[\d.]+[BKMGT]")
    for line in [*theirs[1:4], *[x for x in ours[1:] if x and x[0] not in " LT"]]:
        cells = columns(line, header)
        assert len(cells) == 7
        assert re.fullmatch(r"[0-9a-z]{8}", cells[0]) and row.fullmatch(cells[3]), line
        assert re.fullmatch(r"(pass|fail|unknown)\*?\+?", cells[4]) and cells[5] in ("", "PP")
        assert cells[6].isdigit()
    assert theirs[-1] in ours  # the legend, to the character
    assert any(columns(x, header)[4:6] == ["pass*+", "PP"] for x in ours[1:4])  # as row 1


def test_gc_summary_has_the_missions_lines(sample: Path) -> None:
    ours = run_main("--root", sample, "gc").out.splitlines()
    theirs = [line.rstrip() for line in MISSION_GC.splitlines()]
    assert [shape(line) for line in ours[: len(theirs) - 4]] == [
        shape(line) for line in theirs[:-4]
    ]
    family_lines = [line for line in ours if re.match(r"  \w+: keep \d+/\d+, delete ", line)]
    assert len(family_lines) == 5
    assert {shape(line).split(":")[1] for line in family_lines} <= {
        shape(line).split(":")[1] for line in theirs[-4:]
    }
