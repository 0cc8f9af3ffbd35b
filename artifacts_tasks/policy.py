"""Retention, pure: (runs, policy, now) -> a keep/delete decision with its reasons for each.

The time-bucket rules follow restic's `forget` policy exactly (restic
internal/data/snapshot_policy.go; conformance vectors in shared/conformance/restic-policy):
runs newest first; each rule keeps the newest run of every bucket it has not seen yet
while its count lasts (-1: no limit); a rule with count left at the oldest run keeps that
one too; `keep_within*` count back from the newest run that is not in the future. The
safety rules (pinned, last pass, last run) are applied on top and always win. The clock
is an argument: nothing here reads it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Generic, NamedTuple, Protocol, TypeVar

from .config import Retention


class Dated(Protocol):
    @property
    def timestamp(self) -> datetime: ...


T = TypeVar("T", bound=Dated)

_DURATION = re.compile(r"(?:[0-9]+[ymdh])+")
_DURATION_PART = re.compile(r"([0-9]+)([ymdh])")


@dataclass(frozen=True)
class Duration:
    """restic's calendar duration: `1y2m3d4h` = 1 year, 2 months, 3 days and 4 hours
    (units in any order, as restic reads them)."""

    years: int = 0
    months: int = 0
    days: int = 0
    hours: int = 0

    @classmethod
    def parse(cls, text: str) -> Duration:
        if not _DURATION.fullmatch(text):
            raise ValueError(f"not a duration: {text!r} (use e.g. 7d, 12h or 1y2m3d4h)")
        total = dict.fromkeys("ymdh", 0)
        for number, unit in _DURATION_PART.findall(text):
            total[unit] = int(number)  # as restic: a repeated unit keeps its last value
        return cls(total["y"], total["m"], total["d"], total["h"])

    def before(self, t: datetime) -> datetime:
        """`t` minus this duration, normalised as Go's AddDate does (Mar 31 - 1m = Mar 3)."""
        month0 = t.month - 1 - self.months
        year = t.year - self.years + month0 // 12
        try:
            first = t.replace(year=year, month=month0 % 12 + 1, day=1)
            return first + timedelta(days=t.day - 1 - self.days, hours=-self.hours)
        except (ValueError, OverflowError):  # before year 1: everything is within
            return datetime.min.replace(tzinfo=t.tzinfo)

    def __str__(self) -> str:
        parts = zip((self.years, self.months, self.days, self.hours), "ymdh", strict=True)
        return "".join(f"{n}{unit}" for n, unit in parts if n) or "0h"


@dataclass(frozen=True)
class Policy:
    """The keep rules of one family. Counts: 0 = rule off, -1 = unlimited."""

    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0
    within: Duration | None = None
    within_hourly: Duration | None = None
    within_daily: Duration | None = None
    within_weekly: Duration | None = None
    within_monthly: Duration | None = None
    within_yearly: Duration | None = None

    @classmethod
    def from_retention(cls, r: Retention) -> Policy:
        def d(text: str | None) -> Duration | None:
            duration = Duration.parse(text) if text else None
            return duration if duration != Duration() else None  # as restic: 0d is off

        return cls(
            r.keep,
            r.keep_hourly,
            r.keep_daily,
            r.keep_weekly,
            r.keep_monthly,
            r.keep_yearly,
            d(r.keep_within),
            d(r.keep_within_hourly),
            d(r.keep_within_daily),
            d(r.keep_within_weekly),
            d(r.keep_within_monthly),
            d(r.keep_within_yearly),
        )


class Match(NamedTuple):
    """One rule that kept a run: restic's wording and ours."""

    rule: str  # config key: keep, keep_daily, keep_within, keep_within_weekly, ...
    restic: str  # e.g. "daily snapshot", "oldest monthly snapshot", "weekly within 1m"
    reason: str  # e.g. "keep_last 3/10", "daily 2025-09-06", "oldest weekly 2025-W36"


class Verdict(NamedTuple, Generic[T]):
    """The decision on one run; `counters` = what each count rule had left after it."""

    item: T
    rank: int  # 1 = newest of its family
    keep: bool
    matches: tuple[Match, ...]
    counters: dict[str, int]
    reasons: tuple[str, ...]


# (config key, counters key, restic's name, bucket value, bucket label)
Bucket = tuple[str, str, str, Callable[[datetime, int], int], Callable[[datetime], str]]
_COUNT_RULES: tuple[Bucket, ...] = (
    ("keep", "last", "last", lambda t, n: n, lambda t: ""),
    (
        "keep_hourly",
        "hourly",
        "hourly",
        lambda t, n: ((t.year * 100 + t.month) * 100 + t.day) * 100 + t.hour,
        lambda t: f"{t.year:04d}-{t.month:02d}-{t.day:02d} {t.hour:02d}:00",
    ),
    (
        "keep_daily",
        "daily",
        "daily",
        lambda t, n: (t.year * 100 + t.month) * 100 + t.day,
        lambda t: f"{t.year:04d}-{t.month:02d}-{t.day:02d}",
    ),
    (
        "keep_weekly",
        "weekly",
        "weekly",
        lambda t, n: _iso_week(t),
        lambda t: "{}-W{:02d}".format(*t.isocalendar()[:2]),
    ),
    (
        "keep_monthly",
        "monthly",
        "monthly",
        lambda t, n: t.year * 100 + t.month,
        lambda t: f"{t.year:04d}-{t.month:02d}",
    ),
    ("keep_yearly", "yearly", "yearly", lambda t, n: t.year, lambda t: f"{t.year:04d}"),
)
_WITHIN_RULES = _COUNT_RULES[1:]  # hourly ... yearly


def apply_policy(items: Sequence[T], policy: Policy, *, now: datetime) -> list[Verdict[T]]:
    """restic's forget policy over `items`: a verdict per item, newest first.

    A kept item's reasons name each rule that kept it; a deleted item's name why each
    rule that is on passed it by (`beyond keep_last 10 (rank 12)`, `daily 2025-09-06
    taken by a newer run`, `older than keep_within 7d`).
    """
    ordered = sorted(items, key=lambda i: i.timestamp, reverse=True)  # stable, as restic
    past = [i.timestamp for i in ordered if i.timestamp <= now]
    # As restic: with every run in the future the reference is the zero time, so every
    # run is "within" (rather than the keep_within rules silently switching off).
    latest = max(past) if past else datetime.min.replace(tzinfo=UTC)
    totals = [
        policy.last,
        policy.hourly,
        policy.daily,
        policy.weekly,
        policy.monthly,
        policy.yearly,
    ]
    counts = list(totals)
    seen: list[int | None] = [None] * len(counts)
    active = [(i, rule) for i, rule in enumerate(_COUNT_RULES) if totals[i] != 0]
    # keep_within*: (cutoff, shown duration) computed once; a run must be newer than cutoff.
    within = _cutoff(policy.within, latest)
    durations = (
        policy.within_hourly,
        policy.within_daily,
        policy.within_weekly,
        policy.within_monthly,
        policy.within_yearly,
    )
    withins = []
    for i, (rule, d) in enumerate(zip(_WITHIN_RULES, durations, strict=True)):
        cut = _cutoff(d, latest)
        if cut is not None:
            withins.append((i, rule, cut))
    seen_within: list[int | None] = [None] * len(_WITHIN_RULES)
    last_index = len(ordered) - 1
    # Reasons are most of the work on a big family: build each distinct one once.
    exhausted = [
        f"beyond {rule[0]} {total}" for rule, total in zip(_COUNT_RULES, totals, strict=True)
    ]
    labels: list[dict[int, str]] = [{} for _ in _COUNT_RULES]
    too_old = {i: f"older than keep_within_{rule[2]} {cut[1]}" for i, rule, cut in withins}
    counter_names = [(i, rule[1]) for i, rule in active]
    verdicts: list[Verdict[T]] = []
    for nr, item in enumerate(ordered):
        t = item.timestamp
        matches: list[Match] = []
        misses: list[str] = []
        if within is not None:
            cutoff, shown = within
            if t > cutoff:
                matches.append(
                    Match("keep_within", f"within {shown}", f"within {shown} of the newest run")
                )
            else:
                misses.append(f"older than keep_within {shown}")
        for i, (key, _, name, bucket, label) in active:
            total = totals[i]
            if counts[i] == 0:
                misses.append(exhausted[i] if i else f"beyond keep_last {total} (rank {nr + 1})")
                continue
            value = bucket(t, nr)
            if value == seen[i] and nr != last_index:
                text = labels[i].get(value)
                if text is None:
                    text = labels[i][value] = f"{name} {label(t)} taken by a newer run"
                misses.append(text)
                continue
            oldest = "oldest " if value == seen[i] else ""
            seen[i] = value
            if counts[i] > 0:
                counts[i] -= 1
            ours = (
                f"keep_last {nr + 1}/{'all' if total < 0 else total}"
                if key == "keep"
                else f"{name} {label(t)}"
            )
            matches.append(Match(key, f"{oldest}{name} snapshot", oldest + ours))
        for i, (_, _, name, bucket, label), (cutoff, shown) in withins:
            if not t > cutoff:
                misses.append(too_old[i])
                continue
            value = bucket(t, nr)
            if value == seen_within[i] and nr != last_index:
                misses.append(f"{name} {label(t)} (within {shown}) taken by a newer run")
                continue
            oldest = "oldest " if value == seen_within[i] else ""
            seen_within[i] = value
            matches.append(
                Match(
                    f"keep_within_{name}",
                    f"{oldest}{name} within {shown}",
                    f"{oldest}{name} {label(t)} (within {shown})",
                )
            )
        if matches:
            counters = {name: counts[i] for i, name in counter_names if counts[i] != 0}
            verdicts.append(
                Verdict(
                    item, nr + 1, True, tuple(matches), counters, tuple(m.reason for m in matches)
                )
            )
        else:
            verdicts.append(
                Verdict(item, nr + 1, False, (), {}, tuple(misses or ["no keep rule is on"]))
            )
    return verdicts


def _iso_week(t: datetime) -> int:
    year, week, _ = t.isocalendar()
    return year * 100 + week


def _cutoff(d: Duration | None, latest: datetime | None) -> tuple[datetime, str] | None:
    return None if d is None or latest is None else (d.before(latest), str(d))


class Run(Dated, Protocol):
    """What the safety rules need to know about a run (a manifest Entry is one)."""

    @property
    def id(self) -> str: ...

    @property
    def status(self) -> str: ...

    @property
    def pinned(self) -> bool: ...

    def sort_key(self) -> tuple[datetime, str, str]: ...


R = TypeVar("R", bound=Run)


def decide(runs: Sequence[R], retention: Retention, *, now: datetime) -> list[Verdict[R]]:
    """One family's verdicts, newest first: the keep rules, then the safety rules on top.

    A run that is pinned (flagged, or named in `retention.pin`), the family's newest
    (last_run) or its newest passing run (last_pass) is kept whatever the rules and
    counts say, and says so first.
    """
    if not runs:
        return []
    newest = max(runs, key=lambda r: r.sort_key()).id
    passing = [r for r in runs if r.status == "pass"]
    newest_pass = max(passing, key=lambda r: r.sort_key()).id if passing else None
    pins = set(retention.pin)
    special = pins | {r.id for r in runs if r.pinned} | {newest, newest_pass}
    verdicts = []
    for v in apply_policy(runs, Policy.from_retention(retention), now=now):
        run = v.item
        if run.id in special:  # most runs are not: skip building their safety tuple
            held = (
                ("pinned", run.pinned or run.id in pins),
                ("last_run", run.id == newest),
                ("last_pass", run.id == newest_pass),
            )
            safety = tuple(name for name, holds in held if holds)
            if safety:
                reasons = safety + (v.reasons if v.keep else ())
                v = Verdict(run, v.rank, True, v.matches, v.counters, reasons)
        verdicts.append(v)
    return verdicts
