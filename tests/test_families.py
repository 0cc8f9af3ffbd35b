"""Families, run keys, timestamps, statuses and ids (DESIGN §2) as tables and properties."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from artifacts_tasks import families as fam
from artifacts_tasks.config import Family, default_config

CLASSIFIER = fam.Classifier(default_config().families)


@pytest.mark.parametrize(
    ("path", "family"),
    [
        ("microstructure/proofs/p_20250906_143022.jsonl", "proofs"),
        ("a/b/microstructure/proofs/p.md", "proofs"),
        ("bench/topgainers.jsonl", "bench"),
        ("nightly/bench/topgainers.md", "bench"),
        ("bench/p99_latency.json", "bench"),
        ("bench/other.json", None),  # only p99_*.json
        ("bench/sub/x.md", None),  # `*` does not cross directories
        ("smoke90/backtest_1.json", "smoke90"),
        ("explain_delta/x.jsonl", "explain"),
        ("greenwall/verification_1.json", "greenwall"),
        ("greenwall/summary.json", None),
        (".trash/bench/a.md", None),  # dot-directories are never artifacts
        ("bench/.hidden.md", None),
        ("x/.cache/bench/a.md", None),
        ("bench/a.MD", None),  # patterns are case-sensitive
        ("bench", None),
    ],
)
def test_default_families(path: str, family: str | None) -> None:
    found = CLASSIFIER.family_of(path)
    assert (found.name if found else None) == family


def test_first_family_in_config_order_wins() -> None:
    c = fam.Classifier([Family("a", ("**/x/*.md",)), Family("b", ("**/*.md",))])
    assert c.family_of("x/r.md").name == "a"  # type: ignore[union-attr]
    assert c.family_of("y/r.md").name == "b"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("glob", "matches", "misses"),
    [
        ("**/bench/*.md", ["bench/a.md", "x/y/bench/a.md"], ["bench/a/b.md", "xbench/a.md"]),
        ("bench/**", ["bench/a", "bench/a/b"], ["x/bench/a"]),
        ("r/?.md", ["r/a.md"], ["r/ab.md"]),
        ("r/[ab].md", ["r/a.md", "r/b.md"], ["r/c.md"]),
        ("r/[!ab].md", ["r/c.md"], ["r/a.md"]),
        ("r/a+b (1).md", ["r/a+b (1).md"], ["r/aab (1).md"]),
    ],
)
def test_glob_translation(glob: str, matches: list[str], misses: list[str]) -> None:
    regex = re.compile(r"\A" + fam.glob_to_regex(glob) + r"\Z")
    for m in matches:
        assert regex.match(m), m
    for m in misses:
        assert not regex.match(m), m


T = datetime(2025, 9, 6, 14, 30, 22, tzinfo=UTC)


@pytest.mark.parametrize(
    ("name", "key", "when"),
    [
        ("topgainers_20250906_143022.jsonl", "20250906T143022Z", T),
        ("topgainers_20250906-143022.md", "20250906T143022Z", T),
        ("p99_20250906T143022Z.json", "20250906T143022Z", T),
        ("p99_20250906T143022.json", "20250906T143022Z", T),
        ("v_2025-09-06T14:30:22Z.json", "20250906T143022Z", T),
        ("v_2025-09-06T14-30-22.json", "20250906T143022Z", T),
        ("run_20251399_999999_then_20250906_143022.md", "20250906T143022Z", T),  # first *valid*
        ("x120250906_143022.md", "x120250906_143022", None),  # digits run on: not a token
        ("baseline.md", "baseline", None),
        ("archive.tar.gz", "archive.tar", None),
        ("v_2025-09-06T14:30-22.json", "v_2025-09-06T14:30-22", None),  # mixed separators
    ],
)
def test_run_keys(name: str, key: str, when: datetime | None) -> None:
    assert CLASSIFIER.run_key(Family("bench", ("*",)), name) == (key, when)


def test_run_pattern_names_the_run() -> None:
    family = Family("logs", ("logs/*",), run_pattern=r"^(?P<run>build-\d+)-")
    c = fam.Classifier([family])
    assert c.run_key(family, "build-17-unit.log") == ("build-17", None)
    assert c.run_key(family, "build-17-e2e.log") == ("build-17", None)
    # A run key with a timestamp in it is dated by that timestamp.
    dated = Family("d", ("*",), run_pattern=r"^(?P<run>nightly-\d{8}_\d{6})")
    assert fam.Classifier([dated]).run_key(dated, "nightly-20250906_143022-a.md")[1] == T
    # No match: the usual rules apply.
    assert c.run_key(family, "other_20250906_143022.log") == ("20250906T143022Z", T)


@given(
    st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9999, 12, 30)),
    st.sampled_from(
        [
            "%Y%m%d_%H%M%S",
            "%Y%m%d-%H%M%S",
            "%Y%m%dT%H%M%SZ",
            "%Y-%m-%dT%H:%M:%SZ",
            "%Y-%m-%dT%H-%M-%S",
        ]
    ),
    st.text(alphabet="abc_-.", max_size=8),
    st.sampled_from([".md", ".jsonl", "_x.json"]),
)
def test_any_timestamp_spelling_gives_the_same_run(
    when: datetime, spelling: str, prefix: str, suffix: str
) -> None:
    when = when.replace(microsecond=0, tzinfo=UTC)
    name = f"{prefix}{when.strftime(spelling)}{suffix}"
    key, found = CLASSIFIER.run_key(Family("f", ("*",)), name)
    assert found == when
    assert key == when.strftime("%Y%m%dT%H%M%SZ")


@given(st.text(min_size=1, max_size=40).filter(lambda s: "/" not in s and "\x00" not in s))
def test_any_name_gets_a_run_key(name: str) -> None:
    key, _ = CLASSIFIER.run_key(Family("f", ("*",)), name)
    assert key


# ---- status --------------------------------------------------------------------------------

STATUS = [
    ("a.json", '{"status": "PASS"}', "pass"),
    ("a.json", '{"status": "Passed"}', "pass"),
    ("a.json", '{"result": "green"}', "pass"),
    ("a.json", '{"verdict": "red"}', "fail"),
    ("a.json", '{"status": "error"}', "fail"),
    ("a.json", '{"passed": false}', "fail"),
    ("a.json", '{"ok": true}', "pass"),
    ("a.json", '{"success": true}', "pass"),
    ("a.json", '{"status": "running", "passed": true}', "pass"),
    ("a.json", '{"status": 1}', "unknown"),
    ("a.json", "[1, 2]", "unknown"),
    ("a.json", "{not json", "unknown"),
    ("a.json", '{"nested": {"status": "fail"}}', "unknown"),  # top level only
    ("a.jsonl", '{"status": "fail"}\n{"x": 1}\n{"status": "pass"}\n{"y": 2}\n', "pass"),
    ("a.jsonl", '{"status": "pass"}\n{"status": "fail"}\n', "fail"),
    ("a.jsonl", '{"status": "pass"}\n{"status": "fail"\n', "pass"),  # torn last line
    ("a.jsonl", '{"a": 1}\n', "unknown"),
    ("a.md", "# Report\n\nStatus: PASS\n", "pass"),
    ("a.md", "# Report\n**Result:** FAIL\n", "fail"),
    ("a.md", "# Report\n- **status**: passed\n", "pass"),
    ("a.md", "# Report\n_Verdict_: Fail\n", "fail"),
    ("a.md", "# Report\nStatus: pending\nResult: ok\n", "pass"),
    ("a.md", "# GREEN-WALL: PASS\n", "pass"),
    ("a.md", "## ❌ Latency\n", "fail"),
    ("a.md", "## ✅ All checks\nStatus: FAIL\n", "pass"),  # the first such line decides
    ("a.md", "# Passing notes\n", "unknown"),  # PASS only as a word, in capitals
    ("a.md", "Some text\n", "unknown"),
    ("run_FAILED.md", "nothing here\n", "fail"),
    ("run_pass.json", "{}", "pass"),
    ("bypass.md", "nothing\n", "unknown"),  # `pass` only as a word of the name
]


@pytest.mark.parametrize(("name", "content", "status"), STATUS)
def test_content_status(name: str, content: str, status: str) -> None:
    assert fam.content_status(name, content.encode()) == status


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        (["pass", "fail"], "fail"),
        (["pass", "unknown"], "pass"),
        (["unknown"], "unknown"),
        ([], "unknown"),
    ],
)
def test_run_status(statuses: list[str], expected: str) -> None:
    assert fam.run_status(statuses) == expected


@given(
    st.lists(
        st.dictionaries(
            st.sampled_from(["status", "x", "ok"]),
            st.sampled_from(["pass", "fail", "maybe", True, False, 3]),
            max_size=3,
        ),
        min_size=1,
        max_size=8,
    )
)
def test_jsonl_status_is_the_last_record_with_a_verdict(records: list[dict[str, object]]) -> None:
    data = "".join(json.dumps(r) + "\n" for r in records).encode()
    expected = next((s for s in map(fam.record_status, reversed(records)) if s), None)
    assert fam.jsonl_status(data) == expected


# ---- ids -----------------------------------------------------------------------------------


def test_ids_are_stable_and_8_hex() -> None:
    h = fam.entry_id_hash("bench", "nightly/bench", "20250906T143022Z")
    assert h == fam.entry_id_hash("bench", "nightly/bench", "20250906T143022Z")
    assert re.fullmatch(r"[0-9a-f]{32}", h)
    assert h != fam.entry_id_hash("bench", "bench", "20250906T143022Z")
    key = ("bench", "nightly/bench", "20250906T143022Z")
    assert fam.assign_ids({key: h}, {}) == {key: h[:8]}


HEX = st.text(alphabet="0123456789abcdef", min_size=32, max_size=32)


@given(
    st.lists(HEX, max_size=30, unique=True),
    st.text(alphabet="0123456789abcdef", min_size=6, max_size=10),
)
def test_ids_lengthen_only_on_collision(hashes: list[str], shared: str) -> None:
    # Force some collisions in the first 8 digits.
    hashes = list(dict.fromkeys(hashes + [(shared + h)[:32] for h in hashes[:5]]))
    keys = {("f", "d", str(i)): h for i, h in enumerate(hashes)}
    ids = fam.assign_ids(keys, {})
    assert len(set(ids.values())) == len(hashes)
    for k, short in ids.items():
        full = keys[k]
        assert full.startswith(short)
        assert len(short) >= 8
        if len(short) > 8:
            assert any(o != full and o.startswith(short[:-1]) for o in hashes)


def test_ids_are_sticky_when_a_newcomer_collides() -> None:
    """A pinned id must not change because a new run's hash shares its first 8 digits."""
    old, new = ("bench", "bench", "r43843"), ("bench", "bench", "r158661")
    h_old, h_new = fam.entry_id_hash(*old), fam.entry_id_hash(*new)
    assert h_old[:8] == h_new[:8]  # a real collision of 8-digit prefixes
    first = fam.assign_ids({old: h_old}, {})
    assert first == {old: h_old[:8]}
    both = fam.assign_ids({old: h_old, new: h_new}, first)
    assert both[old] == h_old[:8]  # kept
    assert both[new] != both[old] and h_new.startswith(both[new]) and len(both[new]) > 8
