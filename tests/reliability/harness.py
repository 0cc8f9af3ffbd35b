"""What the reliability tests share: a CLI run in a forked process that a real SIGKILL can
stop, a snapshot of what a project holds, the no-loss invariants, and the figures.

A forked child runs `cli.main` exactly as `python -m artifacts_tasks` would, minus the
interpreter's start-up (0.25 s a run, which a sweep of hundreds of kills cannot afford);
the subprocess-based crash tests in test_crash.py and test_writes.py keep the real entry
point honest.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import xxhash

from artifacts_tasks import cli
from artifacts_tasks.compact import read_original
from artifacts_tasks.manifest import parse_manifest

FIGURES_ENV = "RELIABILITY_FIGURES"  # a directory: each test process writes its counts there
figures: Counter[str] = Counter()


def count(name: str, n: int = 1) -> None:
    """Add to one of the figures docs/reliability.md reports (tools/reliability_figures.py)."""
    figures[name] += n


def save_figures() -> None:
    where = os.environ.get(FIGURES_ENV)
    if where and figures:
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        Path(where, f"{worker}-{os.getpid()}.json").write_text(json.dumps(dict(figures)))


@dataclass
class Outcome:
    code: int  # as subprocess gives it: -9 for a SIGKILL
    out: str
    err: str

    @property
    def killed(self) -> bool:
        return self.code == -9


def run(
    root: Path,
    *argv: str,
    failpoint: str = "",
    trace: Path | None = None,
    config: Path | None = None,
) -> Outcome:
    """One CLI command on `root` in a forked child, from the root's parent directory."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        pid = os.fork()
        if pid == 0:  # the child: never returns into pytest
            code = 3
            try:
                for name in ("ARTIFACTS_FAILPOINT", "ARTIFACTS_FAILPOINT_TRACE"):
                    os.environ.pop(name, None)
                if failpoint:
                    os.environ["ARTIFACTS_FAILPOINT"] = failpoint
                if trace is not None:
                    os.environ["ARTIFACTS_FAILPOINT_TRACE"] = str(trace)
                signal.alarm(120)  # a hang ends as a failure (-14), not a stuck suite
                os.chdir(root.parent)
                null = os.open(os.devnull, os.O_RDONLY)
                os.dup2(null, 0)
                os.dup2(out.fileno(), 1)
                os.dup2(err.fileno(), 2)
                head = ["--root", str(root), "--no-progress"]
                if config is not None:
                    head += ["--config", str(config)]
                # pytest has replaced sys.stdout and sys.stderr: write to the real ones
                sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 - flushed below
                sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
                code = cli.main([*head, *argv], out=sys.stdout, err=sys.stderr)
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        out.seek(0)
        err.seek(0)
        return Outcome(
            os.waitstatus_to_exitcode(status),
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
        )


def run_subprocess(
    root: Path,
    *argv: str,
    failpoint: str = "",
    prefix: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """One CLI command through the real entry point, `python -m artifacts_tasks`, from the
    root's parent directory, behind `prefix` (strace, setpriv) when given."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ARTIFACTS_FAILPOINT")}
    if failpoint:
        environ["ARTIFACTS_FAILPOINT"] = failpoint
    cli_argv = ["-m", "artifacts_tasks", "--root", str(root), "--no-progress", *argv]
    done = subprocess.run(
        [*prefix, sys.executable, *cli_argv],
        cwd=root.parent,
        env={**environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode == -signal.SIGKILL:
        count("kills.subprocess")
    return done


def steps(trace: Path) -> list[str]:
    """The failpoints a traced run passed, each as `name:N` (its Nth passing); a time in a
    name (`write:gc_report_20251125_101500.md`) becomes a glob, as the next run's differs."""
    seen: Counter[str] = Counter()
    found = []
    for line in trace.read_text().splitlines() if trace.exists() else []:
        name = re.sub(r"[0-9]{8}_[0-9]{6}", "*", line)
        seen[name] += 1
        found.append(f"{name}:{seen[name]}")
    return found


# ---- what a project holds ----------------------------------------------------------------


def _files(top: Path) -> Iterable[Path]:
    """The artifacts under `top`: regular files, no dot part; symlinks are never followed."""
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = Path(dirpath, name)
            if not name.startswith(".") and not path.is_symlink():
                yield path


def originals(root: Path) -> dict[str, bytes]:
    """Every artifact in place -> its original bytes (a compacted file decoded)."""
    return {p.relative_to(root).as_posix(): b"".join(read_original(p)) for p in _files(root)}


def digest(data: bytes) -> str:
    return xxhash.xxh3_128_hexdigest(data)


def trash_folders(root: Path, *, strict: bool = True) -> dict[str, dict[str, str]]:
    """Each trash folder -> {path: xxh3-128} of the files it keeps, checked against its
    record: a file in the trash that its record does not name is a file nobody can find.
    Not `strict`: only what is there, for a trash a hostile test has damaged on purpose."""
    trash = root / ".trash"
    held: dict[str, dict[str, str]] = {}
    if not trash.is_dir():
        return held
    journal = root / ".journal.json"  # until recovery, a journaled move is findable too
    journaled = (
        {m[1] for m in json.loads(journal.read_text())["moves"]} if journal.exists() else set()
    )
    for folder in sorted(trash.iterdir()):
        if not folder.is_dir() or folder.name.startswith("."):
            continue
        files = {
            p.relative_to(folder).as_posix(): digest(p.read_bytes())
            for p in folder.rglob("*")
            if p.is_file() and p.name != ".record.json"
        }
        if files and strict:
            record = json.loads((folder / ".record.json").read_text())
            recorded = {f["path"]: f["xxh3_128"] for f in record["files"]}
            for rel, sum_ in files.items():
                if f".trash/{folder.name}/{rel}" not in journaled:
                    assert recorded.get(rel) == sum_, f"{folder.name}/{rel} is not as recorded"
        held[folder.name] = files
    return held


def state(root: Path) -> dict[str, str]:
    """What a user sees, one key per thing that can change: each file in place (its raw
    bytes), each trash folder (its files) and each pin. Two states are equal when the
    project holds the same things, whatever the times written inside records."""
    found = {f"tree/{p.relative_to(root).as_posix()}": digest(p.read_bytes()) for p in _files(root)}
    for name, files in trash_folders(root, strict=False).items():
        found[f"trash/{name}"] = hashlib.sha256(
            json.dumps(files, sort_keys=True).encode()
        ).hexdigest()
    pins = root / ".pins.json"
    if pins.exists():
        try:
            for run_id in json.loads(pins.read_text())["pins"]:
                found[f"pin/{run_id}"] = "pinned"
        except ValueError:  # damaged on purpose: its bytes are the state
            found["pins"] = digest(pins.read_bytes())
    return found


def holdings(root: Path, *, strict: bool = True) -> dict[str, tuple[str, int]]:
    """Every original byte a project holds: `tree/<path>` for each artifact in place (its
    original bytes, a compacted file decoded), `trash/<folder>/<path>` for each file in
    the trash, and `derived/<path>` for a cleaned Markdown file (the checksum of the
    original it was made from) -> (xxh3-128, size)."""
    trash = root / ".trash"
    # A cleaned Markdown file is made from the original its compaction left in the trash:
    # restoring that original may drop it, as long as the original is then held.
    cleaned = {}
    for record in trash.glob("*/.record.json"):
        try:
            doc = json.loads(record.read_text())
        except ValueError:
            continue  # damaged on purpose (test_hostile.py)
        if isinstance(doc, dict) and doc.get("compacted_xxh3_128"):
            cleaned[doc["compacted_xxh3_128"]] = doc["files"][0]["xxh3_128"]
    held = {}
    for rel, data in originals(root).items():
        sum_ = digest(data)
        if sum_ in cleaned:
            held[f"derived/{rel}"] = (cleaned[sum_], len(data))
        else:
            held[f"tree/{rel}"] = (sum_, len(data))
    for name, files in trash_folders(root, strict=strict).items():
        for rel, sum_ in files.items():
            held[f"trash/{name}/{rel}"] = (sum_, (trash / name / rel).stat().st_size)
    return held


def assert_no_loss(
    root: Path,
    before: Mapping[str, tuple[str, int]],
    purged: Iterable[str] = (),
    *,
    strict: bool = True,
) -> None:
    """Every original byte of `before` is still held, where it may be: a file in place at
    its path or in a trash folder under that same path; a trashed file in its folder or
    back at its path; a cleaned Markdown file, or the original it was made from. Only the
    folders named in `purged` may go. Counts the bytes checked and the bytes lost."""
    here = {rel: digest(data) for rel, data in originals(root).items()}
    folders = trash_folders(root, strict=strict)
    trashed = {(rel, sum_) for files in folders.values() for rel, sum_ in files.items()}
    lost = []
    for key, (sum_, _) in before.items():
        kind, _, rest = key.partition("/")
        if kind == "tree" and (here.get(rest) == sum_ or (rest, sum_) in trashed):
            continue
        if kind == "trash":
            folder, _, rel = rest.partition("/")
            if folders.get(folder, {}).get(rel) == sum_ or here.get(rel) == sum_:
                continue
            if folder in purged:
                continue
        if kind == "derived" and (sum_ in here.values() or sum_ in {s for _, s in trashed}):
            continue  # what it was made from is held
        lost.append(key)
    count("bytes_lost", sum(before[key][1] for key in lost))
    assert not lost, f"lost: {lost}"
    count("bytes_checked", sum(size for _, size in before.values()))


def assert_clean(root: Path) -> None:
    """After recovery: no journal, temp or purge leftovers, and a manifest that parses (its
    schema and body checksum) and names exactly the files on disk with their checksums."""
    leftovers = [
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if ".tmp-" in p.name or p.name.startswith(".purge-") or p.name == ".journal.json"
    ]
    assert leftovers == [], leftovers
    for record in (root / ".trash").glob("*/.record.json"):
        for f in json.loads(record.read_text())["files"]:
            assert (record.parent / f["path"]).is_file(), f"{record.parent.name}: {f['path']}"
    manifest = parse_manifest((root / ".manifest.json").read_bytes(), "the manifest")
    recorded = {f.path: f.xxh3_128 for e in manifest.entries for f in e.files}
    on_disk = {p.relative_to(root).as_posix(): digest(p.read_bytes()) for p in _files(root)}
    assert recorded == on_disk, "the manifest does not agree with the tree"
