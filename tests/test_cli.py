"""The CLI as users and scripts see it: output formats, pins, locks, exit codes."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from artifacts_tasks import cli
from artifacts_tasks.manifest import load_manifest

from .conftest import BIN, MakeTree, run_console, run_main, write

TREE = {
    "microstructure/proofs/proof_20250906_143022.jsonl": '{"status": "pass"}\n' * 1000,
    "microstructure/proofs/proof_20250906_143022.md": "# Proof\nStatus: PASS\n",
    "bench/topgainers_20250906_142515.jsonl": '{"p99": 1}\n' * 80000,
    "bench/topgainers_20250906_142515.md": "# Bench\n**Result:** FAIL\n",
    "bench/topgainers_20250905_090000.md": "# Bench\nStatus: PASS\n",
    "smoke90/backtest_20250906_142008.json": '{"status": "pass"}',
}


def ids(root: Path) -> dict[str, str]:
    m = load_manifest(root)
    assert m is not None
    return {e.run_key: e.id for e in m.entries}


def test_list_table_matches_the_mission_format(make_tree: MakeTree) -> None:
    root = make_tree(TREE)
    result = run_main("--root", root, "list")
    assert result.code == 0, result.err
    i = ids(root)
    assert result.out.splitlines() == [
        "ID           FAMILY     TIMESTAMP           SIZE     STATUS PINNED FILES",
        f"{i['20250906T143022Z']}     proofs     2025-09-06 14:30:22 19K      pass*+        2",
        f"{i['20250906T142515Z']}     bench      2025-09-06 14:25:15 859K     fail*         2",
        f"{i['20250906T142008Z']}     smoke90    2025-09-06 14:20:08 18B      pass*+        1",
        f"{i['20250905T090000Z']}     bench      2025-09-05 09:00:00 21B      pass+         1",
        "",
        "Legend: * = last run, + = last pass, 📌 = pinned",
        "Totals: 4 runs, 6 files, 878K",
        "  proofs: 1 run, 2 files, 19K",
        "  bench: 2 runs, 3 files, 859K",
        "  smoke90: 1 run, 1 file, 18B",
    ]


def test_list_json_shape_and_family_filter(make_tree: MakeTree) -> None:
    root = make_tree(TREE)
    result = run_main("list", "--json", "--family", "bench", "--root", root)
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert [e["family"] for e in data["entries"]] == ["bench", "bench"]
    first = data["entries"][0]
    assert set(first) >= {
        "id",
        "family",
        "timestamp",
        "status",
        "pinned",
        "last_run",
        "last_pass",
        "size",
        "file_count",
        "paths",
    }
    assert first["timestamp"] == "2025-09-06T14:25:15Z"
    assert (first["status"], first["last_run"], first["last_pass"]) == ("fail", True, False)
    assert first["paths"] == [
        "bench/topgainers_20250906_142515.jsonl",
        "bench/topgainers_20250906_142515.md",
    ]
    assert data["totals"]["entries"] == 2
    assert data["totals"]["by_family"]["bench"]["files"] == 3
    assert data["totals"]["size"] == sum(e["size"] for e in data["entries"])


def test_list_verbose_shows_paths_and_unknown_family_is_an_error(make_tree: MakeTree) -> None:
    root = make_tree(TREE)
    verbose = run_main("--root", root, "list", "--verbose", "--family", "smoke90")
    assert "    smoke90/backtest_20250906_142008.json  18B  pass" in verbose.out
    wrong = run_main("--root", root, "list", "--family", "benhc")
    assert wrong.code == 2
    assert wrong.err.startswith("error: unknown family 'benhc' (families: proofs, bench")


def test_pin_on_off_and_unknown_ids(make_tree: MakeTree) -> None:
    root = make_tree(TREE)
    run_main("--root", root, "scan")
    target = ids(root)["20250905T090000Z"]
    on = run_main("--root", root, "pin", "--id", target, "--on")
    assert on.code == 0, on.err
    assert on.out == f"Pinned {target} (bench, 2025-09-05 09:00:00)\n"
    pins = json.loads((root / ".pins.json").read_text())["pins"]
    assert pins[target]["family"] == "bench"
    table = run_main("--root", root, "list").out
    assert f"{target}     bench      2025-09-05 09:00:00 21B      pass+  📌     1" in table
    assert run_main("--root", root, "list", "--json").out.count('"pinned": true') == 1

    off = run_main("--root", root, "pin", "--off", "--id", target)
    assert off.code == 0
    assert '"pinned": true' not in run_main("--root", root, "list", "--json").out

    unknown = run_main("--root", root, "pin", "--id", target[:5], "--on")
    assert unknown.code == 2
    assert unknown.err == f"error: unknown id '{target[:5]}'; did you mean {target}?\n"
    neither = run_main("--root", root, "pin", "--id", target)
    assert neither.code == 2
    assert neither.err.count("\n") == 1 and "--on" in neither.err


def test_config_pins_show_and_cannot_be_unpinned_by_command(
    make_tree: MakeTree, tmp_path: Path
) -> None:
    root = make_tree(TREE)
    run_main("--root", root, "scan")
    target = ids(root)["20250906T142008Z"]
    config = tmp_path / "c.yaml"
    config.write_text(f"retention:\n  smoke90: {{keep: 8, pin: ['{target}']}}\n")
    listed = json.loads(run_main("--root", root, "--config", config, "list", "--json").out)
    assert [e["id"] for e in listed["entries"] if e["pinned"]] == [target]
    off = run_main("--root", root, "--config", config, "pin", "--id", target, "--off")
    assert off.code == 2
    assert "retention.smoke90.pin" in off.err


def test_a_second_writer_exits_4_naming_the_holder(make_tree: MakeTree) -> None:
    root = make_tree(TREE)
    assert run_main("--root", root, "scan").code == 0
    fd = os.open(root / ".lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, b"pid 4242 on ci-host: gc since 2025-09-06T14:30:22Z\n")
        for command in (["scan"], ["pin", "--id", ids(root)["20250906T142008Z"], "--on"]):
            result = run_console("artifacts", *command, cwd=root.parent)
            assert result.code == 4, result
            assert "another writer holds artifacts/.lock (pid 4242 on ci-host: gc" in result.err
            assert result.err.count("\n") == 1
        # A reader is not blocked: it shows the last saved manifest and says so.
        listed = run_console("artifacts", "list", cwd=root.parent)
        assert listed.code == 0
        assert "showing the manifest saved at" in listed.err
        assert "smoke90" in listed.out
    finally:
        os.close(fd)
    assert run_console("artifacts", "scan", cwd=root.parent).code == 0


@pytest.mark.skipif(shutil.which("flock") is None, reason="flock(1) not installed")
def test_flock_1_in_a_script_coordinates_with_the_tool(make_tree: MakeTree) -> None:
    root = make_tree(TREE)
    result = subprocess.run(
        [
            "flock",
            str(root / ".lock"),
            str(BIN / "cryptorun"),
            "artifacts",
            "--root",
            str(root),
            "scan",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # flock(1) holds the lock on its own descriptor: the tool inside must see it as taken.
    assert result.returncode == 4
    assert "another writer holds" in result.stderr


def test_console_script_forms(make_tree: MakeTree) -> None:
    root = make_tree(TREE)
    cwd = root.parent
    assert run_console("artifacts", "list", cwd=cwd).code == 0
    assert run_console("--root", "artifacts", "artifacts", "list", "--json", cwd=cwd).code == 0
    module = subprocess.run(
        [sys.executable, "-m", "artifacts_tasks", "list", "--family", "proofs"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert module.returncode == 0 and "proofs" in module.stdout
    bare = run_console(cwd=cwd)
    assert bare.code == 2 and "usage: cryptorun artifacts COMMAND" in bare.out + bare.err
    helped = run_console("artifacts", "--help", cwd=cwd)
    assert helped.code == 0 and "scan" in helped.out and "pin" in helped.out
    bad = run_console("artifacts", "lst", cwd=cwd)
    assert bad.code == 2 and bad.err.count("\n") == 1 and "invalid choice: 'lst'" in bad.err


def test_output_piped_into_head_is_not_an_error(make_tree: MakeTree) -> None:
    root = make_tree(
        {
            f"bench/r_2025{m:02d}{d:02d}_000000.md": "Status: PASS"
            for m in range(1, 13)
            for d in range(1, 28)
        }
    )
    shell = f"'{BIN / 'cryptorun'}' artifacts --root '{root}' list | head -1"
    proc = subprocess.run(
        ["bash", "-o", "pipefail", "-c", shell], capture_output=True, text=True, timeout=60
    )
    assert proc.stdout.startswith("ID ")
    assert proc.stderr == ""
    assert proc.returncode == 0


def test_internal_errors_are_one_line_unless_debug(
    make_tree: MakeTree, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_tree(TREE)

    def boom(*args: object, **kw: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(cli, "refresh", boom)
    plain = run_main("--root", root, "scan")
    assert plain.code == 3
    assert (
        plain.err == "internal error: RuntimeError: disk on fire (rerun with --debug for details)\n"
    )
    debug = run_main("--root", root, "scan", "--debug")
    assert debug.code == 3
    assert "Traceback" in debug.err and "disk on fire" in debug.err


def test_scan_reports_what_it_did(make_tree: MakeTree) -> None:
    root = make_tree({**TREE, "README.txt": "hello"})
    first = run_main("--root", root, "scan")
    assert first.out == (
        "Scanned 6 files in 4 runs (3 families): 6 hashed (878K), 0 unchanged; manifest updated\n"
    )
    second = run_main("--root", root, "scan")
    assert second.out.endswith("0 hashed (0B), 6 unchanged; manifest unchanged\n")
    write(root, "bench/topgainers_20250905_090000.md", "# Bench\nStatus: FAIL\n")
    third = run_main("--root", root, "scan", "--verbose")
    assert "1 hashed (21B), 5 unchanged; manifest updated" in third.out
    assert "  skipped README.txt: unmanaged: matches no family pattern" in third.out


def test_ctrl_c_exits_130_and_leaves_the_manifest_whole(
    make_tree: MakeTree, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_tree(TREE)
    assert run_main("--root", root, "scan").code == 0
    before = (root / ".manifest.json").read_bytes()

    def interrupted(*args: object, **kw: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "refresh", interrupted)
    result = run_main("--root", root, "scan")
    assert (result.code, result.err) == (130, "interrupted\n")
    assert (root / ".manifest.json").read_bytes() == before


def test_a_lock_symlink_is_never_followed(make_tree: MakeTree, tmp_path: Path) -> None:
    root = make_tree(TREE)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    os.symlink(victim, root / ".lock")
    for command in (["scan"], ["list"]):
        result = run_main("--root", root, *command)
        assert result.code == 2
        assert "artifacts/.lock is a symlink; the tool never writes through it" in result.err
    assert victim.read_text() == "precious"


def test_pins_survive_an_id_collision(tmp_path: Path) -> None:
    """r43843 and r158661 share their first 8 hex digits: the pinned id must not change."""
    root = tmp_path / "artifacts"
    write(root, "bench/r43843.md", "Status: PASS\n")
    run_main("--root", root, "scan")
    (first,) = json.loads(run_main("--root", root, "list", "--json").out)["entries"]
    assert run_main("--root", root, "pin", "--id", first["id"], "--on").code == 0
    write(root, "bench/r158661.md", "Status: PASS\n")
    entries = json.loads(run_main("--root", root, "list", "--json").out)["entries"]
    by_key = {e["run_key"]: e for e in entries}
    assert by_key["r43843"]["id"] == first["id"] and by_key["r43843"]["pinned"]
    assert len(by_key["r158661"]["id"]) > 8 and not by_key["r158661"]["pinned"]
    # Even a manifest rebuilt from nothing (no previous ids) keeps the pin on its run.
    (root / ".manifest.json").unlink()
    rebuilt = json.loads(run_main("--root", root, "list", "--json").out)["entries"]
    assert [e["run_key"] for e in rebuilt if e["pinned"]] == ["r43843"]
    rebuilt_id = next(e["id"] for e in rebuilt if e["run_key"] == "r43843")
    off = run_main("--root", root, "pin", "--id", rebuilt_id, "--off")
    assert off.code == 0
    assert not any(
        e["pinned"] for e in json.loads(run_main("--root", root, "list", "--json").out)["entries"]
    )


def test_list_family_typo_touches_nothing(make_tree: MakeTree) -> None:
    root = make_tree(TREE)
    assert run_main("--root", root, "list", "--family", "bnch").code == 2
    assert not (root / ".manifest.json").exists()


def test_a_root_this_user_cannot_write_is_still_listed(
    make_tree: MakeTree, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_tree(TREE)
    assert run_main("--root", root, "scan").code == 0
    real_open = os.open

    def read_only(path: object, flags: int, *args: int, **kw: int) -> int:
        if str(path).endswith(".lock"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", read_only)
    listed = run_main("--root", root, "list")
    assert listed.code == 0
    assert "smoke90" in listed.out
    assert listed.err.startswith(f"note: cannot write in {root} (Permission denied);")
    for command in (["scan"], ["pin", "--id", "00000000", "--on"]):
        refused = run_main("--root", root, *command)
        assert refused.code == 1
        assert refused.err == (
            f"error: cannot write in {root} (Permission denied); run as a user who may "
            "write there, or use `list` to read the last saved manifest\n"
        )


def test_a_lock_that_is_a_directory_is_refused_clearly(make_tree: MakeTree) -> None:
    root = make_tree(TREE)
    (root / ".lock").mkdir()
    result = run_main("--root", root, "scan")
    assert result.code == 2
    assert "artifacts/.lock is not a regular file" in result.err


def test_list_json_totals_follow_config_order(make_tree: MakeTree) -> None:
    root = make_tree(TREE)
    data = json.loads(run_main("--root", root, "list", "--json").out)
    assert list(data["totals"]["by_family"]) == ["proofs", "bench", "smoke90"]


def test_gc_dry_run_prints_the_plan_and_deletes_nothing(
    make_tree: MakeTree, tmp_path: Path
) -> None:
    root = make_tree({**TREE, "bench/topgainers_20250901_000000.md": "# Bench\nStatus: PASS\n"})
    config = tmp_path / "c.yaml"
    config.write_text("retention:\n  bench: {keep: 1}\n")
    before = sorted(p for p in root.rglob("*") if p.is_file() and ".manifest" not in p.name)
    result = run_main("--root", root, "--config", config, "gc")
    assert result.code == 0, result.err
    i = ids(root)
    lines = result.out.splitlines()
    assert lines[:11] == [
        "GC Plan Summary (DryRun: true)",
        "Total Entries: 5",
        "To Delete: 1 entries (21B, 1 files)",
        "To Keep: 4 entries",
        "Safety: 0 pinned, 3 last-pass, 3 last-run kept",
        "",
        "By Family:",
        "  proofs: keep 1/1, delete 0B",
        "  bench: keep 2/3, delete 21B",
        "  smoke90: keep 1/1, delete 0B",
        "",
    ]
    assert lines[11:] == [
        "To delete:",
        f"  {i['20250901T000000Z']}     bench      2025-09-01 00:00:00 21B      "
        "beyond keep_last 1 (rank 3)",
    ]
    after = sorted(p for p in root.rglob("*") if p.is_file() and ".manifest" not in p.name)
    assert before == [p for p in after if p.name not in (".lock", ".manifest.json")]

    verbose = run_main("--root", root, "--config", config, "gc", "--verbose", "--family", "bench")
    assert "To keep:" in verbose.out
    assert (
        f"  {i['20250906T142515Z']}     bench      2025-09-06 14:25:15 859K     "
        "last_run; keep_last 1/1" in verbose.out
    )
    as_json = json.loads(run_main("--root", root, "--config", config, "gc", "--json").out)
    assert as_json["dry_run"] is True
    assert [d["id"] for d in as_json["delete"]] == [i["20250901T000000Z"]]
    assert as_json["by_family"]["bench"] == {"keep": 2, "total": 3, "delete_bytes": 21}
    assert run_main("--root", root, "gc", "--family", "nope").code == 2
