"""A catalogue of hostile inputs, each with the answer a user must get.

Configs that are not what they claim, manifests, pins, journals and trash records that
were cut short or forged (with a valid checksum), ids that are paths, names no one would
choose, symlinks swapped in after the scan, a 16 MB line, binary files with artifact
extensions, and a family of 100,000 files. For each: the exit code and the words of the
one line on stderr, never a traceback; nothing under the tree is lost, nothing outside it
is touched, and a refusal (exit 2) changes nothing at all.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import xxhash

from . import harness
from .harness import run
from .projects import OPERATIONS, Case, prepare

APPLY = ["gc", "--apply", "--force"]


def _config(text: str | bytes) -> Callable[[Path], None]:
    def change(root: Path) -> None:
        path = root.parent / "config" / "artifacts.yaml"
        path.write_bytes(text.encode() if isinstance(text, str) else text)

    return change


def _forge(edit: Callable[[str], str]) -> Callable[[Path], None]:
    """Rewrite the manifest's body and give it a valid checksum again: a forgery, not damage."""

    def change(root: Path) -> None:
        path = root / ".manifest.json"
        line, _, body = path.read_bytes().partition(b"\n")
        new_body = edit(body.decode()).encode()
        head = json.loads(line.decode() + "]}")
        head["body_xxh3_128"] = xxhash.xxh3_128_hexdigest(new_body)
        del head["entries"]
        opening = json.dumps(head, separators=(",", ":"))[:-1] + ',"entries":['
        path.write_bytes(opening.encode() + b"\n" + new_body)

    return change


def _write(rel: str | bytes, data: bytes) -> Callable[[Path], None]:
    def change(root: Path) -> None:
        path = os.path.join(os.fsencode(root), os.fsencode(rel))
        with open(path, "wb") as f:
            f.write(data)

    return change


def _trash_record(edit: Callable[[dict[str, object]], None]) -> Callable[[Path], None]:
    def change(root: Path) -> None:
        assert run(root, *APPLY).code == 0
        record = sorted((root / ".trash").glob("*/.record.json"))[0]
        doc = json.loads(record.read_text())
        edit(doc)
        record.write_text(json.dumps(doc))

    return change


def _nothing(root: Path) -> None:
    pass


def _config_is_a_directory(root: Path) -> None:
    (root.parent / "config" / "artifacts.yaml").unlink()
    (root.parent / "config" / "artifacts.yaml").mkdir()


def _manifest_is_a_symlink_out(root: Path) -> None:
    outside = root.parent / "outside" / "m.json"
    (root / ".manifest.json").rename(outside)
    (root / ".manifest.json").symlink_to(outside)


def _trash_record_of_random_bytes(root: Path) -> None:
    assert run(root, *APPLY).code == 0
    sorted((root / ".trash").glob("*/.record.json"))[0].write_bytes(RANDOM.randbytes(99))


def _first_trash_id(root: Path) -> str:
    return sorted(p.parent.name for p in (root / ".trash").glob("*/.record.json"))[0]


def _swap_file_for_symlink(root: Path) -> None:
    doomed = root / "greenwall" / "gw_20250301_050000.md"
    doomed.unlink()
    doomed.symlink_to(root.parent / "outside" / "victim")


def _swap_dir_for_symlink(root: Path) -> None:
    """A doomed run's own directory becomes a symlink to a directory outside."""
    directory = next(root.glob("ci/*/bench"))
    outside = root.parent / "outside" / "bench"
    outside.mkdir()
    for path in directory.iterdir():
        (outside / path.name).write_bytes(b"outside, not an artifact\n")
        path.unlink()
    directory.rmdir()
    directory.symlink_to(outside, target_is_directory=True)


def _trash_is_symlink(root: Path) -> None:
    (root / ".trash").symlink_to(root.parent / "outside", target_is_directory=True)


def _symlink_at_scan(root: Path) -> None:
    (root / "bench" / "run_20250316_000000.md").symlink_to(root.parent / "outside" / "victim")


def _family_of_100k(root: Path) -> None:
    many = root / "many"
    many.mkdir()
    for i in range(100_000):
        fd = os.open(
            many / f"r_{20200101 + i // 1000 * 100:08d}_{i % 1000:06d}.md", os.O_WRONLY | os.O_CREAT
        )
        os.write(fd, b"Status: PASS\n" if i % 3 else b"Status: FAIL\n")
        os.close(fd)
    config = root.parent / "config" / "artifacts.yaml"
    config.write_text(
        config.read_text().replace("retention:\n", "retention:\n  many: {keep: 5}\n", 1)
        + "families:\n  many:\n    patterns: ['many/*.md']\n"
    )


@dataclass(frozen=True)
class Hostile:
    change: Callable[[Path], None]
    argv: list[str] | Callable[[Path], list[str]]
    code: int
    words: str  # in the one stderr line when code != 0; in stdout or stderr otherwise


RANDOM = random.Random(7)
CATALOGUE = {
    # configs
    "config that is not YAML": Hostile(_config("retention: [\n"), APPLY, 2, "invalid YAML"),
    "config with a key twice": Hostile(
        _config("retention: {}\nretention: {}\n"), APPLY, 2, "duplicate key"
    ),
    "config with a word for a number": Hostile(
        _config("retention:\n  bench: {keep: two}\n"), APPLY, 2, "retention.bench.keep"
    ),
    "config with an unknown key": Hostile(_config("retension: {}\n"), APPLY, 2, "retension"),
    "config with a Python object tag": Hostile(
        _config("retention: !!python/object/apply:os.system ['touch PWNED']\n"),
        APPLY,
        2,
        "config error",
    ),
    "config that is a billion laughs": Hostile(
        _config(
            "a: &a [x, x, x, x, x, x, x, x, x]\n"
            + "".join(
                f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n"
                for p, c in zip("abcdefgh", "bcdefghi", strict=True)
            )
        ),
        APPLY,
        2,
        "more than 100,000 values",
    ),
    "config nested 400 deep": Hostile(
        _config("a:\n" + "".join("  " * i + "k:\n" for i in range(1, 400))),
        APPLY,
        2,
        "nested more than 32 levels deep",
    ),
    "config with a list for a key": Hostile(
        _config("? [a, b]\n: 1\n"), APPLY, 2, "a key must be a plain value"
    ),
    "config with a control character": Hostile(
        _config("retention: {}\n# \x01\n"), APPLY, 2, "control character"
    ),
    "config that is not UTF-8": Hostile(
        _config(b"retention:\n  bench: {keep: \xff\xfe}\n"), APPLY, 2, "config error"
    ),
    "config that is a directory": Hostile(
        _config_is_a_directory,
        APPLY,
        2,
        "config error",
    ),
    # manifests, pins, journals, records
    "manifest cut in half": Hostile(
        lambda root: (root / ".manifest.json").write_bytes(
            (root / ".manifest.json").read_bytes()[:700]
        ),
        APPLY,
        2,
        "manifest",
    ),
    "manifest of random bytes": Hostile(
        lambda root: (root / ".manifest.json").write_bytes(RANDOM.randbytes(3000)),
        APPLY,
        2,
        "manifest",
    ),
    "manifest forged to name a file outside the tree": Hostile(
        _forge(
            lambda body: body.replace('"greenwall/gw_20250301_050000.md"', '"../outside/victim"', 1)
        ),
        APPLY,
        2,
        "manifest",
    ),
    "manifest forged with an absolute path": Hostile(
        _forge(lambda body: body.replace('"greenwall/gw_20250301_050000.md"', '"/etc/passwd"', 1)),
        APPLY,
        2,
        "manifest",
    ),
    "manifest from a future version": Hostile(
        lambda root: (root / ".manifest.json").write_bytes(
            (root / ".manifest.json").read_bytes().replace(b'"version":1', b'"version":99', 1)
        ),
        APPLY,
        2,
        "manifest",
    ),
    "manifest that is a symlink out of the tree": Hostile(
        _manifest_is_a_symlink_out,
        APPLY,
        0,  # read through, never written through: the write replaces the link
        "Moved",
    ),
    "pins of random bytes": Hostile(
        lambda root: (root / ".pins.json").write_bytes(RANDOM.randbytes(200)),
        APPLY,
        2,
        ".pins.json",
    ),
    "journal of random bytes": Hostile(
        lambda root: (root / ".journal.json").write_bytes(RANDOM.randbytes(200)),
        ["list"],
        2,
        "journal",
    ),
    "journal forged to move a file from outside": Hostile(
        lambda root: (root / ".journal.json").write_text(
            json.dumps(
                {
                    "format": "artifacts_tasks.journal",
                    "version": 1,
                    "operation": "gc",
                    "state": "moving",
                    "started_at": "2025-01-01T00:00:00Z",
                    "pid": 1,
                    "moves": [["../outside/victim", ".trash/x/victim", 7, 0, "0" * 32]],
                    "trash_ids": ["x"],
                    "prune": [],
                    "reports": [],
                    "replaces": [],
                }
            )
        ),
        ["list"],
        2,
        "journal",
    ),
    "trash record forged to restore outside the tree": Hostile(
        _trash_record(lambda doc: doc["files"][0].__setitem__("path", "../outside/victim")),  # type: ignore[index]
        lambda root: ["restore", "--id", _first_trash_id(root)],
        1,
        "restore",
    ),
    "trash record of random bytes": Hostile(
        _trash_record_of_random_bytes,
        lambda root: ["restore", "--id", _first_trash_id(root)],
        1,
        "cannot restore",
    ),
    # ids that are paths
    "restore of ../bench": Hostile(_nothing, ["restore", "--id", "../bench"], 2, "id"),
    "restore of /etc": Hostile(_nothing, ["restore", "--id", "/etc"], 2, "id"),
    "restore of an empty id": Hostile(_nothing, ["restore", "--id", ""], 2, "id"),
    "pin of ../../x": Hostile(_nothing, ["pin", "--id", "../../x", "--on"], 2, "id"),
    "explain of a/b": Hostile(_nothing, ["explain", "--id", "a/b"], 2, "id"),
    "purge older than -1d": Hostile(
        _nothing, ["trash", "purge", "--older-than", "-1d"], 2, "older-than"
    ),
    # names no one would choose: scanned, listed one per line, trashed and kept whole
    "a newline in a name": Hostile(
        _write("greenwall/gw_20250101_000000\n.md", b"Status: FAIL\n"), APPLY, 0, "Moved"
    ),
    "a name that is not UTF-8": Hostile(
        _write(b"greenwall/gw_20250102_000000_\xff\xfe.md", b"Status: FAIL\n"), APPLY, 0, "Moved"
    ),
    "a name like an option": Hostile(
        _write("greenwall/-rf_20250103_000000.md", b"Status: FAIL\n"), APPLY, 0, "Moved"
    ),
    "a name of 255 bytes": Hostile(
        _write("greenwall/gw_20250104_000000_" + "x" * 226 + ".md", b"Status: FAIL\n"),
        APPLY,
        0,
        "Moved",
    ),
    "a name with glob and shell characters": Hostile(
        _write("greenwall/gw [1]*?$(x) _20250105_000000.md", b"Status: FAIL\n"),
        APPLY,
        0,
        "Moved",
    ),
    # symlinks swapped in after the scan
    "a doomed file swapped for a symlink out": Hostile(_swap_file_for_symlink, APPLY, 0, "Moved"),
    "a doomed run's directory swapped for a symlink out": Hostile(
        _swap_dir_for_symlink, APPLY, 0, "Moved"
    ),
    "the trash a symlink out of the tree": Hostile(
        _trash_is_symlink, APPLY, 2, "never writes through it"
    ),
    "a symlink out of the tree when scanned": Hostile(_symlink_at_scan, APPLY, 0, "Moved"),
    # sizes and contents
    "a JSONL line of 16 MB": Hostile(
        _write(
            "bench/run_20250317_000000.jsonl",
            json.dumps({"blob": "ab" * (8 << 20), "status": "pass"}).encode() + b"\n",
        ),
        ["compact", "--apply"],
        0,
        "Compacted",
    ),
    "random bytes named .jsonl": Hostile(
        _write("bench/run_20250318_000000.jsonl", RANDOM.randbytes(50_000)),
        ["compact", "--apply"],
        0,
        "Compact",
    ),
    "NULs and bad UTF-8 named .md": Hostile(
        _write(
            "greenwall/gw_20250319_000000.md", b"# T\n\n## E\n\n\0\xff\xfe\nStatus: PASS\n" * 50
        ),
        ["compact", "--apply"],
        0,
        "Compact",
    ),
}


def _everything(root: Path) -> dict[str, str]:
    """Every file and symlink under the root, dot files included (the manifest, its
    backup, pins, journal, trash records, reports), but the lock: what a refusal keeps."""
    found = {}
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            found[rel] = "-> " + os.readlink(path)
        elif path.is_file() and rel != ".lock":
            found[rel] = xxhash.xxh3_128_hexdigest(path.read_bytes())
    return found


def _outside(root: Path) -> dict[str, bytes]:
    out = root.parent / "outside"
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Case:
    case = prepare(tmp_path_factory.mktemp("hostile") / "pristine", OPERATIONS["gc --apply"])
    (case.root.parent / "outside").mkdir()
    (case.root.parent / "outside" / "victim").write_bytes(b"not yours to move\n")
    return case


@pytest.mark.parametrize("name", list(CATALOGUE))
def test_a_hostile_input_gets_its_answer_and_loses_nothing(
    pristine: Case, shm_path: Path, name: str
) -> None:

    hostile = CATALOGUE[name]
    shutil.copytree(pristine.root.parent, shm_path / "p", symlinks=True)
    root = shm_path / "p" / "artifacts"
    assert run(root, "scan").code == 0  # the copy's new inodes, taken in before the test
    hostile.change(root)
    outside = _outside(root)
    held = harness.holdings(root, strict=False)
    before = _everything(root)
    argv = hostile.argv(root) if callable(hostile.argv) else hostile.argv
    done = run(root, *argv)
    harness.count("hostile")
    what = (name, done.code, done.out[-500:], done.err)
    assert done.code == hostile.code, what
    assert "Traceback" not in done.err and "internal error" not in done.err, what
    if hostile.code:
        (line,) = done.err.splitlines()
        assert hostile.words in line, what
    else:
        assert hostile.words in done.out + done.err, what
    if hostile.code == 2:
        assert _everything(root) == before, "a refusal changed something"
    assert _outside(root) == outside, "something outside the tree changed"
    assert not (root.parent / "PWNED").exists() and not (root / "PWNED").exists()
    harness.assert_no_loss(root, held, strict=False)
    if hostile.code == 0:
        verified = run(root, "verify")
        assert verified.code == 0, verified.out + verified.err
        for path in root.rglob("*.jsonl"):
            rel = path.relative_to(root).as_posix()
            if path.is_file() and not path.is_symlink() and ".trash" not in rel:
                cat = run(root, "cat", rel)
                assert cat.code == 0, cat.err


def test_a_family_of_100000_files_is_refused_then_scanned_and_planned(
    shm_path: Path, tmp_path: Path
) -> None:
    fs = os.statvfs(shm_path)
    where = shm_path if fs.f_bavail * fs.f_frsize > 2 << 30 else tmp_path  # needs ~400 MB
    case = prepare(where / "big", OPERATIONS["gc --apply"])
    _family_of_100k(case.root)
    harness.count("hostile")
    refused = run(case.root, "scan")  # past the default limit of 50,000: a clear refusal
    assert refused.code == 2 and "indexing.max_files_per_scan" in refused.err, refused.err
    config = case.root.parent / "config" / "artifacts.yaml"
    config.write_text(config.read_text() + "indexing: {max_files_per_scan: 200000}\n")
    started = time.perf_counter()
    scanned = run(case.root, "scan")
    assert scanned.code == 0, scanned.err
    scan_s = time.perf_counter() - started
    plan = run(case.root, "gc", "--json", "--family", "many")
    assert plan.code == 0, plan.err
    doc = json.loads(plan.out)
    assert doc["by_family"]["many"]["total"] == 100_000
    assert len(doc["delete"]) == 100_000 - len(doc["keep"])
    harness.count("files_in_largest_family", 100_000)
    print(f"100,000 files: scan {scan_s:.1f} s")


@pytest.mark.parametrize(
    "argv",
    [["restore", "--id", "../bench"], ["pin", "--id", "a/b", "--on"], ["explain", "--id", ".."]],
)
def test_an_id_that_is_a_path_is_refused_before_anything_is_touched(
    pristine: Case, shm_path: Path, argv: list[str]
) -> None:
    """Even on a copied tree, whose manifest any other command would refresh first."""

    shutil.copytree(pristine.root.parent, shm_path / "p", symlinks=True)
    root = shm_path / "p" / "artifacts"
    before = _everything(root)
    done = run(root, *argv)
    assert done.code == 2 and "is not an id" in done.err, done.err
    assert _everything(root) == before
    harness.count("hostile")
