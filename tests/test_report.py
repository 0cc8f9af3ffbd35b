"""The report: facts that agree with list and gc, a self-contained HTML page that renders."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from artifacts_tasks.sample import generate

from .conftest import run_main
from .test_tasks import doit


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "artifacts"
    generate(root, runs_per_family=15, seed=7)
    # Something in the trash too: a stricter policy applied once.
    strict = tmp_path / "strict.yaml"
    strict.write_text("retention:\n  proofs: {keep: 12}\n  bench: {keep: 12}\n")
    assert run_main("--root", root, "--config", strict, "gc", "--apply", "--force").code == 0
    return root


def test_the_report_agrees_with_list_gc_and_the_trash(root: Path) -> None:
    r = run_main("--root", root, "report")
    assert r.code == 0, r
    folder = root / ".reports"
    assert sorted(p.name for p in folder.iterdir()) == ["report.html", "report.json", "report.md"]
    data = json.loads((folder / "report.json").read_text())
    listed = json.loads(run_main("--root", root, "list", "--json").out)
    plan = json.loads(run_main("--root", root, "gc", "--json").out)
    trash = json.loads(run_main("--root", root, "trash", "list", "--json").out)
    assert data["totals"]["runs"] == len(listed["entries"])
    for f in data["families"]:
        runs = [e for e in listed["entries"] if e["family"] == f["family"]]
        assert f["runs"] == len(runs) and f["size"] == sum(e["size"] for e in runs)
        assert f["pass"] == sum(e["status"] == "pass" for e in runs)
        assert f["reclaimable_runs"] == sum(d["family"] == f["family"] for d in plan["delete"])
    assert {r["id"] for r in data["runs"] if not r["keep"]} == {d["id"] for d in plan["delete"]}
    assert len(data["trash"]["items"]) == len(trash["items"]) > 0
    assert data["last_gc"]["moved_runs"] == len(trash["items"])
    md = (folder / "report.md").read_text()
    assert "| proofs | " in md and "## What the next `gc --apply` would delete" in md


def test_the_html_is_one_self_contained_page_with_three_charts(root: Path) -> None:
    assert run_main("--root", root, "report", "--format", "html").code == 0
    page = (root / ".reports" / "report.html").read_text()
    assert page.count("<svg") == 3
    assert "<script" not in page and not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    data_runs = len(json.loads(run_main("--root", root, "list", "--json").out)["entries"])
    doomed = len(json.loads(run_main("--root", root, "gc", "--json").out)["delete"])
    legend = 4  # four legend markers
    assert page.count("<circle") == data_runs + legend
    assert page.count('fill="white"') == doomed + 1  # hollow = deleted next (+1 legend)


def test_a_bad_format_is_a_usage_error_and_writes_nothing(root: Path) -> None:
    r = run_main("--root", root, "report", "--format", "md,pdf")
    assert r.code == 2 and "unknown format 'pdf'" in r.err
    assert not (root / ".reports").exists()


def test_doit_report_is_up_to_date_while_the_runs_are_unchanged(tmp_path: Path) -> None:
    generate(tmp_path / "artifacts", runs_per_family=3, seed=1)
    (tmp_path / "dodo.py").write_text(
        "from artifacts_tasks.tasks import *  # noqa: F403\n"
        "DOIT_CONFIG = {'dep_file': '.doit.json', 'backend': 'json'}\n"
    )
    first = doit(tmp_path, "report")
    assert first.code == 0 and ".  report" in first.out, first
    again = doit(tmp_path, "report")
    assert again.code == 0 and "-- report" in again.out, again
    (tmp_path / "artifacts" / "bench" / "extra_20250907_000000.md").write_text("Status: PASS\n")
    assert ".  report" in doit(tmp_path, "report").out


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Chromium is not installed")
def test_the_html_renders_in_chromium_as_a_person_would_see_it(root: Path, tmp_path: Path) -> None:
    from PIL import Image

    assert run_main("--root", root, "report", "--format", "html").code == 0
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1000,1300",
            f"--screenshot={shot}",
            str(root / ".reports" / "report.html"),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    image = Image.open(shot).convert("RGB")
    assert image.size == (1000, 1300)
    pixels = [image.getpixel((x, y)) for y in range(0, 1300, 2) for x in range(0, 1000, 2)]

    def near(colour: tuple[int, int, int]) -> int:
        return sum(
            all(abs(a - b) < 12 for a, b in zip(p, colour, strict=True))  # type: ignore[arg-type]
            for p in pixels
        )

    assert near((0x2E, 0x85, 0x40)) > 50  # pass runs, drawn
    assert near((0xC6, 0x28, 0x28)) > 25  # fail runs
    assert near((0x6A, 0x5A, 0xCD)) > 125  # trash bars
    assert near((0x1F, 0x77, 0xB4)) > 500  # the first family's disk bar
    assert len(set(pixels)) > 50  # not a blank page


def test_doit_report_reruns_when_its_files_or_the_trash_change(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    generate(root, runs_per_family=14, seed=3)
    (tmp_path / "dodo.py").write_text(
        "from artifacts_tasks.tasks import *  # noqa: F403\n"
        "DOIT_CONFIG = {'dep_file': '.doit.json', 'backend': 'json'}\n"
    )
    assert ".  report" in doit(tmp_path, "report").out
    assert "-- report" in doit(tmp_path, "report").out
    shutil.rmtree(root / ".reports")
    assert ".  report" in doit(tmp_path, "report").out  # its targets are gone
    assert (root / ".reports" / "report.html").is_file()
    assert run_main("--root", root, "gc", "--apply", "--force").code == 0
    assert ".  report" in doit(tmp_path, "report").out  # runs moved to the trash
    assert "-- report" in doit(tmp_path, "report").out
    assert run_main("--root", root, "trash", "purge", "--older-than", "0h").code == 0
    assert ".  report" in doit(tmp_path, "report").out  # the manifest is the same; the trash not
    data = json.loads((root / ".reports" / "report.json").read_text())
    assert data["trash"]["items"] == []


def test_time_axis_labels_are_distinct_and_true_for_a_short_span(tmp_path: Path) -> None:
    from .conftest import write

    root = tmp_path / "artifacts"
    for hour in (1, 5, 9, 13):
        write(root, f"bench/run_20250101_{hour:02d}0000.md", "Status: PASS\n")
    assert run_main("--root", root, "report", "--format", "html").code == 0
    page = (root / ".reports" / "report.html").read_text()
    runs_svg = page.split('aria-label="Runs over time">')[1].split("</svg>")[0]
    labels = re.findall(r'text-anchor="\w+">([^<]+)</text>', runs_svg)
    assert labels[0] == "01-01 01:00" and labels[-1] == "01-01 13:00"
    assert len(labels) == len(set(labels)) == 5
