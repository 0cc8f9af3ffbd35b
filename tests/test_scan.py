"""Scanning: grouping into runs, incremental hashing, and odd or hostile trees."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from artifacts_tasks import scan as scan_mod
from artifacts_tasks.config import build_config, default_config
from artifacts_tasks.families import Classifier
from artifacts_tasks.manifest import load_manifest

from .conftest import MakeTree, run_main, write

RUN = {
    "bench/topgainers_20250906_143022.jsonl": '{"p99_ms": 3}\n{"status": "pass"}\n',
    "bench/topgainers_20250906_143022.md": "# Bench\n**Status:** PASS\n",
    "bench/p99_20250906_143022.json": '{"status": "fail"}',
    "bench/topgainers_20250905_101010.md": "# Bench\nStatus: PASS\n",
    "nightly/bench/topgainers_20250906_143022.md": "# Nightly\nStatus: PASS\n",
    "microstructure/proofs/proof_20250906_120000.jsonl": '{"status": "ok"}\n',
    "greenwall/baseline.md": "# Baseline\n",
    "notes.txt": "not an artifact",
}


def scan(root: Path, **kw: object) -> scan_mod.ScanResult:
    return scan_mod.refresh(root, default_config(), **kw).result  # type: ignore[arg-type]


def test_groups_files_into_runs(make_tree: MakeTree) -> None:
    root = make_tree(RUN)
    m = scan(root).manifest
    runs = {(e.family, e.directory, e.run_key): e for e in m.entries}
    assert set(runs) == {
        ("bench", "bench", "20250906T143022Z"),
        ("bench", "bench", "20250905T101010Z"),
        ("bench", "nightly/bench", "20250906T143022Z"),  # same family, a separate run
        ("proofs", "microstructure/proofs", "20250906T120000Z"),
        ("greenwall", "greenwall", "baseline"),
    }
    main_run = runs[("bench", "bench", "20250906T143022Z")]
    assert [f.path for f in main_run.files] == [
        "bench/p99_20250906_143022.json",
        "bench/topgainers_20250906_143022.jsonl",
        "bench/topgainers_20250906_143022.md",
    ]
    assert main_run.status == "fail"  # one file says fail
    assert main_run.timestamp == datetime(2025, 9, 6, 14, 30, 22, tzinfo=UTC)
    assert main_run.timestamp_source == "run_key"
    assert main_run.size == sum(len(RUN[f.path]) for f in main_run.files)
    baseline = runs[("greenwall", "greenwall", "baseline")]
    assert baseline.status == "unknown"
    assert baseline.timestamp_source == "mtime"
    assert baseline.timestamp == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)  # the fixture's mtime
    assert [e.timestamp for e in m.entries] == sorted(
        (e.timestamp for e in m.entries), reverse=True
    )
    for _, f in m.files():
        assert f.xxh3_128 == xxhash.xxh3_128_hexdigest((root / f.path).read_bytes())


def test_rescan_reuses_checksums_and_force_rehashes(make_tree: MakeTree) -> None:
    root = make_tree(RUN)
    first = scan(root)
    assert (first.files_hashed, first.files_reused) == (7, 0)
    again = scan_mod.refresh(root, default_config())
    assert (again.result.files_hashed, again.result.files_reused) == (0, 7)
    assert not again.written
    assert again.result.manifest.entries == first.manifest.entries

    write(root, "bench/topgainers_20250905_101010.md", "# Bench\nStatus: FAIL\n")
    edited = scan(root)
    assert edited.files_hashed == 1
    by_key = {e.run_key: e for e in edited.manifest.entries if e.directory == "bench"}
    assert by_key["20250905T101010Z"].status == "fail"

    forced = scan(root, force=True)
    assert forced.files_hashed == 7
    assert forced.manifest.entries == edited.manifest.entries


def test_ids_are_stable_across_rescans_and_unrelated_changes(make_tree: MakeTree) -> None:
    root = make_tree(RUN)
    ids = {(e.directory, e.run_key): e.id for e in scan(root).manifest.entries}
    (root / "bench" / "topgainers_20250905_101010.md").unlink()
    write(root, "greenwall/new_20250907_000000.md", "Status: PASS")
    after = {(e.directory, e.run_key): e.id for e in scan(root, force=True).manifest.entries}
    for key, value in after.items():
        if key in ids:
            assert ids[key] == value


def test_symlinks_are_never_followed(make_tree: MakeTree, tmp_path: Path) -> None:
    root = make_tree(RUN)
    outside = tmp_path / "outside"
    write(outside, "bench/secret_20250906_143022.md", "Status: PASS")
    os.symlink(outside / "bench" / "secret_20250906_143022.md", root / "bench" / "link.md")
    os.symlink(outside, root / "linked_dir")
    os.symlink(outside / "bench", root / "nightly" / "bench2")
    result = scan(root)
    paths = {f.path for _, f in result.manifest.files()}
    assert not any("secret" in p or "link" in p for p in paths)
    reasons = {s.path: s.reason for s in result.skipped}
    assert reasons["bench/link.md"] == "symlink: never followed"
    assert reasons["linked_dir"] == "symlink: never followed"
    assert reasons["notes.txt"] == "unmanaged: matches no family pattern"
    verbose = run_main("--root", root, "scan", "--verbose")
    assert "skipped bench/link.md: symlink: never followed" in verbose.out
    assert "skipped notes.txt: unmanaged" in verbose.out


@pytest.mark.parametrize("swap", ["file", "directory"])
def test_path_swapped_for_a_symlink_after_the_walk_is_not_followed(
    make_tree: MakeTree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, swap: str
) -> None:
    root = make_tree(RUN)
    outside = tmp_path / "outside"
    write(outside, "bench/topgainers_20250905_101010.md", "Status: FAIL, read from outside\n")
    real_walk = scan_mod.walk

    swapped = []

    def walk_then_swap(*args: object, collect: bool = True) -> scan_mod.Tree:
        listed = real_walk(*args, collect=collect)  # type: ignore[arg-type]
        if collect and not swapped:  # after the walk that lists files to hash
            swapped.append(True)
            victim = root / "bench" / "topgainers_20250905_101010.md"
            if swap == "file":
                victim.unlink()
                os.symlink(outside / "bench" / victim.name, victim)
            else:
                os.rename(root / "bench", tmp_path / "moved")
                os.symlink(outside / "bench", root / "bench")
        return listed

    monkeypatch.setattr(scan_mod, "walk", walk_then_swap)
    result = scan(root)
    assert not any("outside" in w for w in result.warnings)
    assert "became a symlink during the scan: not followed" in "\n".join(result.warnings)
    for _, f in result.manifest.files():
        assert not (root / f.path).is_symlink()
        assert (root / f.path).resolve().is_relative_to(root.resolve())


def test_dot_entries_are_never_artifacts(make_tree: MakeTree) -> None:
    root = make_tree(
        {**RUN, ".trash/bench/a_20250101_000000.md": "x", "bench/.partial_20250101_000000.md": "x"}
    )
    paths = {f.path for _, f in scan(root).manifest.files()}
    assert not any("/." in f"/{p}" for p in paths)


def test_odd_names(make_tree: MakeTree) -> None:
    root = make_tree({})
    names = [
        b"bench/caf\xe9_20250101_000000.md",
        b"bench/new\nline.md",
        b"bench/sp ace \xe2\x9c\x85.md",
    ]
    for name in names:
        write(root, name, "Status: PASS\n")
    m = scan(root).manifest
    assert sorted(os.fsencode(f.path) for _, f in m.files()) == sorted(names)
    listed = run_main("--root", root, "list", "--verbose")
    assert listed.code == 0
    assert "bench/caf\\xe9_20250101_000000.md" in listed.out
    assert "bench/new\\nline.md" in listed.out
    as_json = run_main("--root", root, "list", "--json")
    paths = [p for e in json.loads(as_json.out)["entries"] for p in e["paths"]]
    assert sorted(os.fsencode(p) for p in paths) == sorted(names)
    assert load_manifest(root) == m


def test_max_files_per_scan_stops_before_writing(make_tree: MakeTree) -> None:
    root = make_tree(RUN)
    config = build_config({"indexing": {"max_files_per_scan": 3}}, "c.yaml")
    from artifacts_tasks.errors import ScanLimitError

    with pytest.raises(ScanLimitError, match="more than 3 artifact files"):
        scan_mod.refresh(root, config)
    assert load_manifest(root) is None


def test_parallel_and_serial_scans_agree(
    make_tree: MakeTree, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scan_mod, "PARALLEL_THRESHOLD", 10)  # use the worker processes
    monkeypatch.setattr(scan_mod.os, "cpu_count", lambda: 4)
    import multiprocessing

    pools = []
    real_context = multiprocessing.get_context

    def counting_context(method: str) -> object:
        pools.append(method)
        return real_context(method)

    monkeypatch.setattr(multiprocessing, "get_context", counting_context)
    files = {
        f"bench/r_202509{d:02d}_{h:02d}0000.jsonl": f'{{"i": {d * h}}}\n{{"status": "pass"}}\n'
        for d in range(1, 11)
        for h in range(10)
    }
    root = make_tree(files)
    serial = build_config({"indexing": {"parallel_workers": 1}}, "c")
    parallel = build_config({"indexing": {"parallel_workers": 4}}, "c")
    a = scan_mod.refresh(root, serial, force=True).result
    b = scan_mod.refresh(root, parallel, force=True).result
    assert a.files_hashed == b.files_hashed == 100
    assert pools == ["fork"]  # the serial scan used none, the parallel one a process pool
    assert a.manifest is not None and b.manifest is not None
    assert a.manifest.entries == b.manifest.entries


def test_big_files_get_status_from_head_or_tail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scan_mod, "WHOLE_READ_LIMIT", 1000)
    monkeypatch.setattr(scan_mod, "HEAD_BYTES", 300)
    body = "".join(f'{{"i": {i}, "status": "pass"}}\n' for i in range(200))
    write(tmp_path, "bench/big_20250101_000000.jsonl", body + '{"status": "fail"}\n{"x": 1}\n')
    write(tmp_path, "bench/big_20250102_000000.md", "# T\nStatus: PASS\n" + "x\n" * 2000)
    write(
        tmp_path,
        "bench/p99_20250103_000000.json",
        json.dumps({"status": "fail", "pad": "x" * 5000}),
    )
    m = scan(tmp_path).manifest
    assert {e.run_key: e.status for e in m.entries} == {
        "20250101T000000Z": "fail",
        "20250102T000000Z": "pass",
        "20250103T000000Z": "fail",
    }
    for _, f in m.files():
        assert f.xxh3_128 == xxhash.xxh3_128_hexdigest((tmp_path / f.path).read_bytes())


def test_config_pins_mark_entries_pinned(make_tree: MakeTree) -> None:
    root = make_tree(RUN)
    target = scan(root).manifest.entries[-1]
    config = build_config({"retention": {target.family: {"pin": [target.id]}}}, "c")
    m = scan_mod.refresh(root, config).result.manifest
    assert [e.id for e in m.entries if e.pinned] == [target.id]


def test_missing_root_is_a_usage_error(tmp_path: Path) -> None:
    result = run_main("--root", tmp_path / "nope", "scan")
    assert result.code == 2
    assert (
        result.err == f"error: artifacts root {tmp_path / 'nope'} does not exist; "
        "create it or pass --root DIR\n"
    )


# ---- the no-change fast path ---------------------------------------------------------------


def test_unchanged_tree_is_not_regrouped_or_rewritten(make_tree: MakeTree) -> None:
    root = make_tree(RUN)
    scan(root)
    before = (root / ".manifest.json").read_bytes()
    again = scan_mod.refresh(root, default_config(), need_manifest=False)
    assert not again.written
    assert again.result.manifest is None  # nothing was parsed
    assert (again.result.runs, again.result.files_seen) == (5, 7)
    assert (root / ".manifest.json").read_bytes() == before


def test_a_truncated_manifest_is_refused_by_scan_too(make_tree: MakeTree) -> None:
    root = make_tree(RUN)
    scan(root)
    raw = (root / ".manifest.json").read_bytes()
    (root / ".manifest.json").write_bytes(raw[: len(raw) // 2])  # header intact, body cut
    result = run_main("--root", root, "scan")
    assert result.code == 2
    assert result.err.startswith("manifest error: ") and "scan --force" in result.err


def test_a_hand_edited_manifest_is_checked_in_full(make_tree: MakeTree) -> None:
    root = make_tree(RUN)
    scan(root)
    path = root / ".manifest.json"
    edited = path.read_bytes().replace(b'"directory":"bench"', b'"directory":"../bench"', 1)
    path.write_bytes(edited)  # the header still says the tree is unchanged
    result = run_main("--root", root, "scan")
    assert result.code == 2
    assert "fails its schema" in result.err


@pytest.mark.parametrize("change", ["pins file", "run_pattern", "rename"])
def test_what_the_signature_covers_makes_a_rescan(make_tree: MakeTree, change: str) -> None:
    root = make_tree(RUN)
    first = scan(root).manifest
    assert first is not None
    config = default_config()
    target = first.entries[-1]
    if change == "pins file":
        (root / ".pins.json").write_text(
            json.dumps(
                {
                    "format": "artifacts_tasks.pins",
                    "version": 1,
                    "pins": {target.id: {"pinned_at": "2025-01-01T00:00:00Z"}},
                }
            )
        )
    elif change == "run_pattern":
        config = build_config(
            {"families": {"bench": {"run_pattern": r"^(?P<run>[a-z0-9]+)_"}}}, "c.yaml"
        )
    else:
        os.rename(root / "greenwall" / "baseline.md", root / "greenwall" / "baseline2.md")
    done = scan_mod.refresh(root, config)
    assert done.written
    after = {(e.directory, e.run_key): e for e in done.manifest.entries}
    if change == "pins file":
        assert [e.id for e in done.manifest.entries if e.pinned] == [target.id]
    elif change == "run_pattern":
        assert ("bench", "topgainers") in after and ("bench", "p99") in after
    else:
        assert ("greenwall", "baseline2") in after and ("greenwall", "baseline") not in after
    assert not scan_mod.refresh(root, config).written  # and then it is settled


# ---- properties over random trees ----------------------------------------------------------

NAME_PART = st.text(
    alphabet=st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)),
    min_size=1,
    max_size=12,
).filter(lambda s: not s.startswith("."))
STAMP = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2030, 1, 1)).map(
    lambda d: d.strftime((d.microsecond % 2 and "%Y%m%d_%H%M%S") or "%Y-%m-%dT%H:%M:%SZ")
)
FILE = st.tuples(
    st.sampled_from(["bench", "nightly/bench", "greenwall", "microstructure/proofs", "other"]),
    NAME_PART,
    st.one_of(st.none(), STAMP),
    st.sampled_from([".md", ".jsonl", ".txt"]),
    st.sampled_from(["Status: PASS\n", '{"status": "fail"}\n', "", "\xff\xfe"]),
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(FILE, min_size=1, max_size=25))
def test_every_artifact_is_in_exactly_one_consistent_run(
    tmp_path_factory: pytest.TempPathFactory, files: list[tuple[str, str, str | None, str, str]]
) -> None:
    root = tmp_path_factory.mktemp("tree")
    written: set[str] = set()
    for directory, part, stamp, ext, content in files:
        name = f"{part}_{stamp}{ext}" if stamp else f"{part}{ext}"
        if len(name.encode()) > 200:
            continue
        write(root, f"{directory}/{name}", content)
        written.add(f"{directory}/{name}")
    classifier = Classifier(default_config().families)
    expected = {p for p in written if classifier.family_of(p) is not None}

    m = scan(root).manifest
    assert m is not None
    paths = [f.path for _, f in m.files()]
    assert sorted(paths) == sorted(expected)  # each artifact once, nothing else
    assert len({e.id for e in m.entries}) == len(m.entries)
    for e in m.entries:
        assert e.size == sum(f.size for f in e.files)
        for f in e.files:
            assert f.path.rpartition("/")[0] == e.directory
            assert classifier.family_of(f.path).name == e.family  # type: ignore[union-attr]
            key, _ = classifier.run_key(classifier.family_of(f.path), f.path.rpartition("/")[2])  # type: ignore[arg-type]
            assert key == e.run_key
    again = scan(root, force=True).manifest
    assert again is not None
    assert [e.id for e in again.entries] == [e.id for e in m.entries]


# ---- hostile or odd trees (regressions from review) ----------------------------------------


def test_years_below_1000_round_trip(make_tree: MakeTree) -> None:
    root = make_tree({"bench/run_00010101_000000.jsonl": '{"status": "pass"}\n'})
    scan(root)
    listed = run_main("--root", root, "list", "--json")
    assert listed.code == 0, listed.err
    assert json.loads(listed.out)["entries"][0]["timestamp"] == "0001-01-01T00:00:00Z"
    assert "0001-01-01 00:00:00" in run_main("--root", root, "list").out


def test_deeply_nested_json_is_no_crash(make_tree: MakeTree) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    root = make_tree(
        {
            "bench/p99_20250101_000000.json": deep,
            "bench/r_20250102_000000.jsonl": '{"status": "pass"}\n{"status": ' + deep + "}\n",
        }
    )
    m = scan(root).manifest
    assert m is not None
    assert {e.run_key: e.status for e in m.entries} == {
        "20250101T000000Z": "unknown",
        "20250102T000000Z": "pass",
    }


def test_unreadable_files_are_warned_about_on_every_scan(
    make_tree: MakeTree, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_tree(RUN)
    real_open = os.open

    def deny(path: str, flags: int, *args: int, **kw: int) -> int:
        if str(path).endswith("p99_20250906_143022.json"):
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, *args, **kw)

    monkeypatch.setattr(scan_mod.os, "open", deny)
    for _ in range(2):  # not settled into "unchanged": the next scan tries again
        result = run_main("--root", root, "scan")
        assert result.code == 0
        assert "p99_20250906_143022.json: cannot read (Permission denied)" in result.err
        paths = {f.path for _, f in load_manifest(root).files()}  # type: ignore[union-attr]
        assert "bench/p99_20250906_143022.json" not in paths  # left out: nothing acts on it
        assert len(paths) == 6
    monkeypatch.setattr(scan_mod.os, "open", real_open)
    healed = run_main("--root", root, "scan")
    assert healed.err == ""
    m = load_manifest(root)
    assert m is not None and len(list(m.files())) == 7


def test_unreadable_directory_is_a_warning_not_a_crash(
    make_tree: MakeTree, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_tree(RUN)
    real_scandir = os.scandir

    def deny(path: str) -> object:
        if str(path).endswith("nightly/bench"):
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr(scan_mod.os, "scandir", deny)
    result = run_main("--root", root, "scan")
    assert result.code == 0
    assert result.err == (
        "warning: nightly/bench: unreadable directory (Permission denied); its files are left out\n"
    )


def test_force_reads_statuses_afresh(make_tree: MakeTree) -> None:
    root = make_tree(RUN)
    scan(root)
    path = root / ".manifest.json"
    path.write_bytes(path.read_bytes().replace(b'"status":"fail"', b'"status":"pass"'))
    result = scan(root, force=True)
    assert result.manifest is not None
    assert "fail" in {e.status for e in result.manifest.entries}


def test_an_edit_hidden_behind_an_old_mtime_is_seen(make_tree: MakeTree) -> None:
    """`cp -p`, `rsync -t` and `touch -r` put old mtimes on new bytes; ctime tells."""
    root = make_tree(RUN)
    scan(root)
    path = root / "bench" / "topgainers_20250905_101010.md"
    st = path.stat()
    path.write_text("# Bench\nStatus: FAIL\n")  # same length as before
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    m = scan(root).manifest
    assert m is not None
    by_key = {e.run_key: e.status for e in m.entries if e.directory == "bench"}
    assert by_key["20250905T101010Z"] == "fail"


def test_a_fifo_swapped_in_after_the_walk_does_not_hang(
    make_tree: MakeTree, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_tree(RUN)
    real_walk = scan_mod.walk

    def walk_then_swap(*args: object, collect: bool = True) -> scan_mod.Tree:
        listed = real_walk(*args, collect=collect)  # type: ignore[arg-type]
        if collect:
            victim = root / "bench" / "topgainers_20250905_101010.md"
            if not victim.is_fifo():
                victim.unlink()
                os.mkfifo(victim)
        return listed

    monkeypatch.setattr(scan_mod, "walk", walk_then_swap)
    result = scan(root)
    assert "bench/topgainers_20250905_101010.md: not a regular file" in result.warnings


def test_big_jsonl_status_is_the_last_verdict_anywhere_in_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scan_mod, "WHOLE_READ_LIMIT", 1000)
    body = '{"status": "fail"}\n' + "".join(f'{{"i": {i}}}\n' for i in range(300_000))
    write(tmp_path, "bench/big_20250101_000000.jsonl", body)
    m = scan(tmp_path).manifest
    assert m is not None and m.entries[0].status == "fail"


def test_a_family_pattern_with_a_middle_double_star(tmp_path: Path) -> None:
    config = build_config({"families": {"results": {"patterns": ["results/**/*.md"]}}}, "c")
    for rel in ["results/a_20250101_000000.md", "results/x/y/b_20250101_000000.md"]:
        write(tmp_path, rel, "Status: PASS")
    m = scan_mod.refresh(tmp_path, config).manifest
    assert sorted(f.path for _, f in m.files()) == [
        "results/a_20250101_000000.md",
        "results/x/y/b_20250101_000000.md",
    ]


def test_lowering_max_files_stops_even_an_unchanged_tree(make_tree: MakeTree) -> None:
    from artifacts_tasks.errors import ScanLimitError

    root = make_tree(RUN)
    scan(root)
    with pytest.raises(ScanLimitError):
        scan_mod.refresh(root, build_config({"indexing": {"max_files_per_scan": 3}}, "c"))


def test_temp_files_of_a_dead_writer_are_cleaned_up(make_tree: MakeTree) -> None:
    root = make_tree(RUN)
    dead = root / ".manifest.json.tmp-999999999"
    dead.write_text("half a manifest")
    alive = root / f".manifest.json.tmp-{os.getpid()}"
    alive.write_text("being written")
    scan(root)
    assert not dead.exists()
    assert alive.exists()


def test_a_run_dated_by_mtime_keeps_its_time_while_its_bytes_do_not_change(
    make_tree: MakeTree,
) -> None:
    root = make_tree(RUN)
    first = scan(root).manifest
    assert first is not None
    (baseline,) = [e for e in first.entries if e.run_key == "baseline"]
    path = root / "greenwall" / "baseline.md"
    os.utime(path, (2_000_000_000, 2_000_000_000))  # a restore or a copy resets the mtime
    moved = scan(root).manifest
    assert moved is not None
    (again,) = [e for e in moved.entries if e.run_key == "baseline"]
    assert again.timestamp == baseline.timestamp
    path.write_text("# Baseline\nStatus: PASS\n")  # new bytes: dated by the new mtime
    os.utime(path, (2_000_000_000, 2_000_000_000))
    changed = scan(root).manifest
    assert changed is not None
    (edited,) = [e for e in changed.entries if e.run_key == "baseline"]
    assert edited.timestamp == datetime.fromtimestamp(2_000_000_000, UTC)
