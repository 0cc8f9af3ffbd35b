"""A model-based test: random sequences of what users do, against what must exist where.

The machine adds runs, edits files, pins and unpins, applies gc, restores, compacts and
purges the trash, through the CLI (in process). The model is small on purpose: each
artifact file's original bytes, and the pins. After every step the tree must agree:

* every file the model knows is at its path with its bytes (read back through `cat`'s
  reader, so compacted files count) or in a trash folder whose record names it with its
  checksum — only a purge may make one disappear;
* each family's newest run, newest passing run and pinned runs are in place after a gc;
* the manifest agrees with the tree (`verify` exits 0, `list` names exactly the files on
  disk), and no journal or temp file is left.
"""

from __future__ import annotations

import io
import json
import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import xxhash
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from artifacts_tasks import cli
from artifacts_tasks.compact import read_original

from . import harness

START = datetime(2025, 9, 1)
CONFIG = """\
retention:
  bench: {keep: 2}
  greenwall: {keep: 1, keep_daily: 2}
compaction:
  jsonl: {min_size_kb: 0}
  markdown: {min_size_kb: 0}
trash:
  retention_days: 30
"""


def run(root: Path, config: Path, *argv: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(
        ["--root", str(root), "--config", str(config), "--no-progress", *argv], out=out, err=err
    )
    assert code in (0, 1, 2), (argv, code, err.getvalue())  # never an internal error
    return code, out.getvalue()


class Artifacts(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="model-"))
        self.root = self.tmp / "artifacts"
        self.root.mkdir()
        self.config = self.tmp / "artifacts.yaml"
        self.config.write_text(CONFIG)
        self.files: dict[str, bytes] = {}  # path -> original bytes, for every file not purged
        self.runs: dict[str, tuple[str, str, str]] = {}  # run key -> (family, status, stamp)
        self.clock = 0

    def teardown(self) -> None:
        harness.count("model.sequences")
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ---- what users do -------------------------------------------------------------------

    @initialize(n=st.integers(2, 5))
    def some_history(self, n: int) -> None:
        for k in range(n):
            self.add_run("bench", "PASS" if k % 3 else "FAIL", k % 2 == 0, 7)
            self.add_run("greenwall", "FAIL" if k % 3 else "PASS", k % 2 == 1, 5)

    @rule(
        family=st.sampled_from(["bench", "greenwall"]),
        status=st.sampled_from(["PASS", "FAIL"]),
        jsonl=st.booleans(),
        hours=st.integers(1, 30),
    )
    def add_run(self, family: str, status: str, jsonl: bool, hours: int) -> None:
        self.clock += hours
        stamp = (START + timedelta(hours=self.clock)).strftime("%Y%m%d_%H%M%S")
        base = f"{family}/run_{stamp}"
        files = {f"{base}.md": f"# Run {stamp}\n\nStatus: {status}\n".encode()}
        if jsonl:
            rows = [json.dumps({"i": i, "family": family, "ok": status}) for i in range(200)]
            files[f"{base}.jsonl"] = ("\n".join(rows) + "\n").encode()
        for rel, data in files.items():
            path = self.root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            self.files[rel] = data
        self.runs[base] = (family, status.lower(), stamp)

    @rule(data=st.data())
    def edit_a_file(self, data: st.DataObject) -> None:
        here = sorted(p for p in self.files if p.endswith(".md") and (self.root / p).exists())
        if not here:
            return
        rel = data.draw(st.sampled_from(here))
        new = self.files[rel] + b"\nmore notes\n"
        (self.root / rel).write_bytes(new)
        self.files[rel] = new

    @rule(data=st.data(), on=st.booleans())
    def pin(self, data: st.DataObject, on: bool) -> None:
        code, out = run(self.root, self.config, "list", "--json")
        entries = json.loads(out)["entries"]
        if entries:
            entry = data.draw(st.sampled_from(entries))
            code, _ = run(
                self.root, self.config, "pin", "--id", entry["id"], "--on" if on else "--off"
            )
            assert code == 0

    @rule()
    def gc_apply(self) -> None:
        code, out = run(self.root, self.config, "list", "--json")
        before = json.loads(out)["entries"]
        protected = {e["id"]: e["paths"] for e in before if e["pinned"]}
        for family in ("bench", "greenwall"):
            runs = [e for e in before if e["family"] == family]
            newest = max(runs, key=lambda e: e["timestamp"], default=None)
            passing = [e for e in runs if e["status"] == "pass"]
            newest_pass = max(passing, key=lambda e: e["timestamp"], default=None)
            for e in (newest, newest_pass):
                if e is not None:
                    protected[e["id"]] = e["paths"]
        expired = self.expired()
        code, _ = run(self.root, self.config, "gc", "--apply", "--force")
        assert code == 0
        event(f"gc with {len(before)} runs")
        self.forget_purged(expired)  # gc --apply purges what was trashed over 30 days ago
        for run_id, paths in protected.items():
            for rel in paths:
                assert (self.root / rel).exists(), f"protected run {run_id} lost {rel}"

    @rule(data=st.data())
    def restore(self, data: st.DataObject) -> None:
        code, out = run(self.root, self.config, "trash", "list", "--json")
        items = [i for i in json.loads(out)["items"] if i["record"]]
        event(f"restore with {'something' if items else 'nothing'} in the trash")
        if items:
            item = data.draw(st.sampled_from(items))
            code, _ = run(self.root, self.config, "restore", "--id", item["trash_id"])
            assert code == 0  # names are unique: nothing can be in the way
            for f in item["record"]["files"]:  # the whole run is back, as it was
                assert b"".join(read_original(self.root / f["path"])) == self.files[f["path"]]
            assert not (self.root / ".trash" / item["trash_id"]).exists()

    @rule()
    def compact(self) -> None:
        code, _ = run(self.root, self.config, "compact", "--apply")
        assert code == 0
        for rel, data in self.files.items():  # a cleaned Markdown file: its new bytes
            path = self.root / rel
            if rel.endswith(".md") and path.exists() and path.read_bytes() != data:
                trashed = list((self.root / ".trash").glob(f"*/{rel}"))
                assert any(t.read_bytes() == data for t in trashed), rel
                self.files[rel] = path.read_bytes()

    @rule(everything=st.booleans())
    def purge_the_trash(self, everything: bool) -> None:
        expired = self.expired(everything)
        argv = ["--older-than", "0h"] if everything else []
        code, _ = run(self.root, self.config, "trash", "purge", *argv)
        assert code == 0
        self.forget_purged(expired)

    @rule(days=st.sampled_from([1, 20, 29, 31, 45]))  # either side of the 30 days
    def time_passes(self, days: int) -> None:
        """The clock moves on for the trash: each folder was trashed `days` earlier."""
        for record_path in self.root.glob(".trash/*/.record.json"):
            record = json.loads(record_path.read_text())
            when = datetime.fromisoformat(record["trashed_at"].replace("Z", "+00:00"))
            record["trashed_at"] = (when - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")
            record_path.write_text(json.dumps(record))

    # ---- the model's view of the trash ---------------------------------------------------------

    def expired(self, everything: bool = False) -> dict[str, set[str]]:
        """The folders a purge must delete now (trashed over 30 days ago) -> their paths."""
        cutoff = datetime.now(UTC) - timedelta(days=30)
        folders = {}
        for record_path in self.root.glob(".trash/*/.record.json"):
            record = json.loads(record_path.read_text())
            when = datetime.fromisoformat(record["trashed_at"].replace("Z", "+00:00"))
            if everything or when <= cutoff:
                folders[record_path.parent.name] = {f["path"] for f in record["files"]}
        return folders

    def forget_purged(self, folders: dict[str, set[str]]) -> None:
        """Drop the files a purge deleted from the model, after checking it had the right
        to, and that it did delete every folder past its time."""
        kept = [name for name in folders if (self.root / ".trash" / name).exists()]
        assert not kept, f"trash folders past their time were kept: {kept}"
        expired = set().union(*folders.values())
        held = {
            p.relative_to(self.root / ".trash").as_posix().split("/", 1)[1]
            for p in self.root.glob(".trash/*/**/*")
            if p.is_file()
        }
        purged = [r for r in self.files if not (self.root / r).exists() and r not in held]
        event(f"purge with {'nothing' if not expired else 'something'} expired")
        for rel in purged:
            assert rel in expired, f"{rel} was purged before its time"
            del self.files[rel]

    # ---- what must hold --------------------------------------------------------------------

    @invariant()
    def nothing_is_lost(self) -> None:
        harness.count("model.checks")
        trashed: dict[str, list[Path]] = {}  # path -> trashed copies its record vouches for
        for record_path in self.root.glob(".trash/*/.record.json"):
            record = json.loads(record_path.read_text())
            for f in record["files"]:
                copy = record_path.parent / f["path"]
                if copy.is_file():
                    assert xxhash.xxh3_128_hexdigest(copy.read_bytes()) == f["xxh3_128"]
                    trashed.setdefault(f["path"], []).append(copy)
        for rel, data in self.files.items():
            path = self.root / rel
            if path.exists():
                assert b"".join(read_original(path)) == data, rel
            else:  # in the trash, perhaps compacted: its original bytes are what count
                copies = trashed.get(rel, [])
                assert any(b"".join(read_original(c)) == data for c in copies), rel

    @invariant()
    def the_manifest_agrees(self) -> None:
        code, out = run(self.root, self.config, "list", "--json")
        assert code == 0
        listed = {p for e in json.loads(out)["entries"] for p in e["paths"]}
        on_disk = {
            p.relative_to(self.root).as_posix()
            for p in self.root.rglob("*")
            if p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(self.root).parts)
        }
        assert listed == on_disk
        assert run(self.root, self.config, "verify")[0] == 0
        leftovers = [
            p for p in self.root.rglob("*") if ".tmp-" in p.name or p.name == ".journal.json"
        ]
        assert leftovers == []


TestArtifacts = Artifacts.TestCase
TestArtifacts.settings = settings(
    max_examples=15,
    stateful_step_count=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
