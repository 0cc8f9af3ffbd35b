"""The retention engine: restic's conformance vectors, then invariants as properties."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from artifacts_tasks.config import Retention
from artifacts_tasks.policy import Duration, Policy, apply_policy, decide

from .conftest import REPO

CASES_FILE = REPO.parent / "shared" / "conformance" / "restic-policy" / "restic_policy_cases.json"


class Snap(NamedTuple):
    timestamp: datetime
    index: int


def load_cases() -> tuple[list[Snap], list[dict[str, Any]]]:
    data = json.loads(CASES_FILE.read_text())
    snaps = [Snap(datetime.fromisoformat(s["time"]), i) for i, s in enumerate(data["snapshots"])]
    cases = [c for c in data["cases"] if "keep_tags" not in c["policy"]]
    return snaps, cases


def policy_of(spec: dict[str, Any]) -> Policy:
    fields: dict[str, Any] = {}
    for key, value in spec.items():
        name = key.removeprefix("keep_")
        fields[name] = Duration.parse(value) if name.startswith("within") else value
    return Policy(**fields)


def iso(t: datetime) -> str:
    text = t.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return text.replace(".100000Z", ".1Z")  # restic prints the shortest fraction


SNAPS, CASES = load_cases() if CASES_FILE.exists() else ([], [])


def test_all_tag_free_cases_are_here() -> None:
    """The vectors live in ../shared (beside the clone in CI). A clone without them skips
    the conformance cases with this reason; under CI their absence is a failure."""
    if not CASES_FILE.exists() and not os.environ.get("CI"):
        pytest.skip(f"restic conformance vectors not found at {CASES_FILE}")
    assert len(CASES) == 37


@pytest.mark.parametrize("case", CASES, ids=[f"case{c['index']}" for c in CASES])
def test_restic_conformance(case: dict[str, Any]) -> None:
    now = max(s.timestamp for s in SNAPS) + timedelta(days=1)
    verdicts = apply_policy(SNAPS, policy_of(case["policy"]), now=now)
    kept = [v for v in verdicts if v.keep]
    assert [iso(v.item.timestamp) for v in kept] == case["expect_keep"]
    got = [
        {
            "time": iso(v.item.timestamp),
            "matches": [m.restic for m in v.matches],
            "counters": v.counters,
        }
        for v in kept
    ]
    assert got == case["expect_reasons"]


@pytest.mark.parametrize(
    ("text", "start", "expected"),
    [
        ("1d", "2016-01-18T12:00:00", "2016-01-17T12:00:00"),
        ("1m", "2016-03-31T00:00:00", "2016-03-02T00:00:00"),  # Go: Feb 31 -> Mar 2 (leap)
        ("1y2m3d4h", "2016-05-10T05:00:00", "2015-03-07T01:00:00"),
        ("13d23h", "2016-01-18T12:00:00", "2016-01-04T13:00:00"),
    ],
)
def test_durations_count_back_like_go(text: str, start: str, expected: str) -> None:
    t = datetime.fromisoformat(start).replace(tzinfo=UTC)
    assert Duration.parse(text).before(t) == datetime.fromisoformat(expected).replace(tzinfo=UTC)


@pytest.mark.parametrize("bad", ["", "7", "1w", "d", "1d 1y", "-1d", "1.5d"])
def test_bad_durations_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        Duration.parse(bad)


# ---- properties ------------------------------------------------------------------------------

TIMES = st.lists(
    st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2026, 1, 1)).map(
        lambda d: d.replace(tzinfo=UTC)
    ),
    max_size=40,
)
COUNT = st.sampled_from([0, 0, 1, 2, 3, 7, -1])
POLICIES = st.builds(
    Policy,
    last=COUNT,
    hourly=COUNT,
    daily=COUNT,
    weekly=COUNT,
    monthly=COUNT,
    yearly=COUNT,
    within=st.none() | st.sampled_from([Duration(days=3), Duration(months=1)]),
    within_daily=st.none() | st.sampled_from([Duration(days=10), Duration(years=1)]),
)


@given(TIMES, POLICIES)
def test_every_run_gets_one_verdict_and_kept_runs_say_why(
    times: list[datetime], policy: Policy
) -> None:
    snaps = [Snap(t, i) for i, t in enumerate(times)]
    verdicts = apply_policy(snaps, policy, now=datetime(2026, 6, 1, tzinfo=UTC))
    assert sorted(v.item.index for v in verdicts) == list(range(len(snaps)))
    assert [v.rank for v in verdicts] == list(range(1, len(snaps) + 1))
    for v in verdicts:
        assert v.keep == bool(v.matches)
        assert v.reasons  # kept or not, every verdict says why


@given(TIMES, POLICIES)
def test_applying_twice_deletes_nothing_more(times: list[datetime], policy: Policy) -> None:
    snaps = [Snap(t, i) for i, t in enumerate(times)]
    now = datetime(2026, 6, 1, tzinfo=UTC)
    kept = [v.item for v in apply_policy(snaps, policy, now=now) if v.keep]
    again = apply_policy(kept, policy, now=now)
    assert all(v.keep for v in again)


# ---- safety rules on top (decide) -------------------------------------------------------------


class Run(NamedTuple):
    timestamp: datetime
    id: str
    status: str = "pass"
    pinned: bool = False

    def sort_key(self) -> tuple[datetime, str, str]:
        return (self.timestamp, "", self.id)


RUNS = st.lists(
    st.builds(
        Run,
        timestamp=st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2026, 1, 1)).map(
            lambda d: d.replace(tzinfo=UTC)
        ),
        id=st.uuids().map(lambda u: u.hex[:8]),
        status=st.sampled_from(["pass", "fail", "unknown"]),
        pinned=st.just(False),  # pins are drawn from the runs in the test
    ),
    max_size=30,
    unique_by=lambda r: r.id,
)
RETENTIONS = st.builds(
    Retention,
    keep=st.sampled_from([0, 1, 3, 10, -1]),
    keep_daily=st.sampled_from([0, 2, -1]),
    keep_weekly=st.sampled_from([0, 1]),
    keep_within=st.sampled_from([None, "2d"]),
)


@given(RUNS, RETENTIONS, st.data())
def test_safety_rules_always_hold(
    runs: list[Run], retention: Retention, data: st.DataObject
) -> None:
    if runs:
        chosen = data.draw(st.sets(st.sampled_from([r.id for r in runs]), max_size=3))
        runs = [r._replace(pinned=r.id in chosen) for r in runs]
    now = datetime(2026, 1, 2, tzinfo=UTC)
    verdicts = decide(runs, retention, now=now)
    assert sorted(v.item.id for v in verdicts) == sorted(r.id for r in runs)  # keep ∪ delete
    kept = {v.item.id for v in verdicts if v.keep}
    assert {r.id for r in runs if r.pinned} <= kept
    if runs:
        assert max(runs, key=Run.sort_key).id in kept
        passing = [r for r in runs if r.status == "pass"]
        if passing:
            assert max(passing, key=Run.sort_key).id in kept
    for v in verdicts:
        assert v.reasons
    # Planning again over what was kept deletes nothing more.
    survivors = [v.item for v in verdicts if v.keep]
    assert all(v.keep for v in decide(survivors, retention, now=now))


def test_reasons_read_as_the_contract_says() -> None:
    day = timedelta(days=1)
    t0 = datetime(2025, 9, 6, 14, 30, 22, tzinfo=UTC)
    runs = [
        Run(t0, "r1", "fail"),
        Run(t0 - day, "r2"),
        Run(t0 - day - timedelta(hours=2), "r3"),
        Run(t0 - 3 * day, "r4", pinned=True),
        Run(t0 - 4 * day, "r5"),
    ]
    verdicts = {v.item.id: v for v in decide(runs, Retention(keep=1, keep_daily=2), now=t0)}
    assert verdicts["r1"].reasons == ("last_run", "keep_last 1/1", "daily 2025-09-06")
    assert verdicts["r2"].reasons == ("last_pass", "daily 2025-09-05")
    assert verdicts["r3"].reasons == ("beyond keep_last 1 (rank 3)", "beyond keep_daily 2")
    assert not verdicts["r3"].keep
    assert verdicts["r4"].reasons == ("pinned",)
    assert verdicts["r4"].keep and not verdicts["r5"].keep
    # The same day twice: the newer one holds the bucket (the oldest run overall would be
    # kept anyway, as restic does, while the rule has count left).
    same_day = decide([*runs[:3], runs[4]], Retention(keep=1, keep_daily=5), now=t0)
    assert same_day[2].item.id == "r3" and not same_day[2].keep
    assert same_day[2].reasons == (
        "beyond keep_last 1 (rank 3)",
        "daily 2025-09-05 taken by a newer run",
    )
    assert same_day[3].reasons == ("daily 2025-09-02",)
    nothing = decide(runs[1:3], Retention(keep=0), now=t0)
    assert nothing[1].reasons == ("no keep rule is on",)


# ---- regressions from the second review -----------------------------------------------------


def test_decide_honours_the_retentions_own_pins() -> None:
    t0 = datetime(2025, 9, 6, tzinfo=UTC)
    runs = [Run(t0 - timedelta(hours=h), f"0000000{h}") for h in range(5)]
    verdicts = {v.item.id: v for v in decide(runs, Retention(keep=1, pin=("00000003",)), now=t0)}
    assert verdicts["00000003"].keep
    assert verdicts["00000003"].reasons[0] == "pinned"


def test_keep_within_with_every_run_in_the_future_keeps_them_all() -> None:
    """As restic: no run at or before now -> the reference is the zero time."""
    now = datetime(2025, 9, 6, tzinfo=UTC)
    runs = [Snap(now + timedelta(hours=h), h) for h in range(1, 6)]
    verdicts = apply_policy(runs, Policy(within=Duration(days=7)), now=now)
    assert all(v.keep for v in verdicts)
    assert {v.reasons for v in verdicts} == {("within 7d of the newest run",)}


@pytest.mark.parametrize(
    ("text", "expected"), [("1d2d", Duration(days=2)), ("2h1y", Duration(years=1, hours=2))]
)
def test_durations_read_as_restic_reads_them(text: str, expected: Duration) -> None:
    assert Duration.parse(text) == expected


def test_unicode_digits_are_not_durations_and_zero_is_off() -> None:
    with pytest.raises(ValueError):
        Duration.parse("١d")
    assert Policy.from_retention(Retention(keep=1, keep_within="0d")).within is None


@given(
    st.lists(st.integers(min_value=0, max_value=200), min_size=1, max_size=25),
    st.integers(min_value=-20, max_value=220),
    RETENTIONS,
    st.data(),
)
def test_safety_holds_with_ties_and_any_now(
    hours: list[int], now_hour: int, retention: Retention, data: st.DataObject
) -> None:
    """Whole-hour times (ties likely), `now` before, among or after the runs."""
    base = datetime(2025, 1, 1, tzinfo=UTC)
    runs = [
        Run(base + timedelta(hours=h), f"{i:08x}", data.draw(st.sampled_from(["pass", "fail"])))
        for i, h in enumerate(hours)
    ]
    verdicts = decide(runs, retention, now=base + timedelta(hours=now_hour))
    kept = {v.item.id for v in verdicts if v.keep}
    newest = max(runs, key=Run.sort_key)
    assert newest.id in kept
    passing = [r for r in runs if r.status == "pass"]
    if passing:
        assert max(passing, key=Run.sort_key).id in kept
