"""verify: every file rechecked against the manifest's checksum, never absorbed by a rescan."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .conftest import MakeTree, run_main

TREE = {
    "bench/topgainers_20250906_142515.md": "# Bench\nStatus: FAIL\n",
    "bench/topgainers_20250905_090000.md": "# Bench\nStatus: PASS\n",
    "smoke90/backtest_20250906_142008.json": '{"status": "pass"}',
}


def ids(root: Path) -> dict[str, str]:
    data = json.loads(run_main("--root", root, "list", "--json").out)
    return {p: e["id"] for e in data["entries"] for p in e["paths"]}


def test_an_intact_tree_verifies(make_tree: MakeTree) -> None:
    root = make_tree(TREE)
    run_main("--root", root, "scan")
    result = run_main("--root", root, "verify")
    assert result.code == 0
    assert result.out.startswith("Verified 3 files in 3 runs against the manifest of ")
    assert result.out.endswith(": all as recorded\n")


def test_silent_corruption_missing_files_and_symlinks_are_reported(
    make_tree: MakeTree, tmp_path: Path
) -> None:
    root = make_tree(TREE)
    run_main("--root", root, "scan")
    i = ids(root)
    # Bit rot: same size, mtime put back; a rescan would not notice, verify must.
    rotten = root / "bench" / "topgainers_20250905_090000.md"
    st = rotten.stat()
    rotten.write_text("# Bench\nStatus: PASZ\n")
    os.utime(rotten, ns=(st.st_atime_ns, st.st_mtime_ns))
    (root / "smoke90" / "backtest_20250906_142008.json").unlink()
    swapped = root / "bench" / "topgainers_20250906_142515.md"
    swapped.unlink()
    (tmp_path / "elsewhere.md").write_text("# Bench\nStatus: FAIL\n")
    os.symlink(tmp_path / "elsewhere.md", swapped)

    result = run_main("--root", root, "verify")
    assert result.code == 1
    lines = result.out.splitlines()
    assert sorted(lines[:-1]) == sorted(
        [
            f"{i['bench/topgainers_20250905_090000.md']}  bench/topgainers_20250905_090000.md: "
            "changed (same size, checksum differs)",
            f"{i['smoke90/backtest_20250906_142008.json']}  smoke90/backtest_20250906_142008.json: "
            "missing",
            f"{i['bench/topgainers_20250906_142515.md']}  bench/topgainers_20250906_142515.md: "
            "replaced by a symlink (not followed)",
        ]
    )
    assert lines[-1].endswith(": 3 problems")
    as_json = json.loads(run_main("--root", root, "verify", "--json").out)
    assert (as_json["files"], as_json["ok"], len(as_json["problems"])) == (3, 0, 3)


def test_verify_does_not_absorb_an_edit_into_the_manifest(make_tree: MakeTree) -> None:
    root = make_tree(TREE)
    run_main("--root", root, "scan")
    before = (root / ".manifest.json").read_bytes()
    (root / "bench" / "topgainers_20250905_090000.md").write_text("# Bench\nStatus: FAIL!\n")
    assert run_main("--root", root, "verify").code == 1
    assert (root / ".manifest.json").read_bytes() == before  # the evidence is kept


def test_verify_without_a_manifest_says_what_to_do(make_tree: MakeTree) -> None:
    root = make_tree(TREE)
    result = run_main("--root", root, "verify")
    assert result.code == 2
    assert (
        result.err == f"error: {root} has no manifest yet; run `cryptorun artifacts scan` first\n"
    )
