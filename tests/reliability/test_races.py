"""Writers racing on one root — gc --apply, compact --apply, two pins, scan --force, trash
purge and a restore — one at a time writes, the others exit 4 naming the holder, and a
reader never sees a torn manifest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

from artifacts_tasks.manifest import parse_manifest
from artifacts_tasks.sample import generate

from . import harness

CONFIG = "compaction:\n  jsonl: {min_size_kb: 1}\n  markdown: {min_size_kb: 0}\n"


def start(root: Path, *argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "artifacts_tasks", "--root", str(root), "--no-progress", *argv],
        cwd=root.parent,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "ARTIFACTS_FAILPOINT"},
    )


def test_mixed_writers_take_turns_and_readers_never_see_a_torn_manifest(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    generate(root, runs_per_family=14, seed=11, file_kb=40)
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "artifacts.yaml").write_text(CONFIG)
    first = start(root, "scan")
    assert first.wait(timeout=120) == 0
    listed = start(root, "list", "--json")
    ids = [e["id"] for e in json.loads(listed.communicate(timeout=60)[0])["entries"]]

    torn: list[str] = []
    reads = 0
    refused = 0
    writers = 0
    stop = threading.Event()

    def reader() -> None:
        nonlocal reads
        while not stop.is_set():
            try:
                raw = (root / ".manifest.json").read_bytes()
            except FileNotFoundError:
                continue
            try:
                parse_manifest(raw, "racing read")
            except Exception as exc:  # a torn or partial manifest
                torn.append(str(exc))
            reads += 1

    first_gc = start(root, "gc", "--apply", "--force")  # runs in the trash for restores
    assert first_gc.wait(timeout=120) == 0
    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for round_ in range(3):
            trash = start(root, "trash", "list", "--json")
            items = json.loads(trash.communicate(timeout=60)[0])["items"]
            procs = [
                start(root, "restore", "--id", items[0]["trash_id"]),
                start(root, "gc", "--apply", "--force"),
                start(root, "compact", "--apply"),
                start(root, "pin", "--id", ids[0], "--on"),
                start(root, "scan", "--force"),
                start(root, "pin", "--id", ids[1], "--on"),
                # the last round empties the trash; the others leave runs to restore
                start(root, "trash", "purge", "--older-than", "0h" if round_ == 2 else "30d"),
            ]
            writers += len(procs)
            results = [(p.wait(timeout=180), p.stderr.read() if p.stderr else "") for p in procs]
            for code, err in results:
                assert code in (0, 4), err
                if code == 4:
                    assert "another writer holds" in err and "pid " in err
                    refused += 1
            assert any(code == 0 for code, _ in results)
    finally:
        stop.set()
        thread.join()
    harness.count("races.rounds", 3)
    harness.count("races.writers", writers)
    harness.count("races.refused", refused)
    harness.count("races.reads", reads)
    assert reads > 0 and torn == []
    assert refused > 0  # writers started at once did meet at the lock
    verify = start(root, "verify")
    assert verify.wait(timeout=120) == 0, verify.stderr.read() if verify.stderr else ""
    assert not (root / ".journal.json").exists()
    assert [p for p in root.rglob("*") if ".tmp-" in p.name] == []
