"""Garbage collection: `plan` decides (pure); applying a plan comes next (journal, trash).

The plan is computed per family by `policy.decide` and is shown before anything moves:
the mission's *GC Plan Summary*, each run to delete with its reasons, and the JSON shape
of DESIGN §6 for scripts.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .config import SAFETY_RULES, Config
from .manifest import Entry, Manifest
from .pins import is_pinned
from .policy import Verdict, decide


@dataclass(frozen=True)
class GcPlan:
    """Every run's verdict, by family in config order, newest first within a family."""

    now: datetime
    dry_run: bool
    by_family: dict[str, list[Verdict[Entry]]]

    @property
    def verdicts(self) -> list[Verdict[Entry]]:
        return [v for verdicts in self.by_family.values() for v in verdicts]

    @property
    def delete(self) -> list[Verdict[Entry]]:
        return [v for v in self.verdicts if not v.keep]

    @property
    def keep(self) -> list[Verdict[Entry]]:
        return [v for v in self.verdicts if v.keep]

    def safety_counts(self) -> dict[str, int]:
        """How many kept runs each safety rule holds (a run may count for several)."""
        return {rule: sum(rule in v.reasons for v in self.keep) for rule in SAFETY_RULES}


def plan(
    manifest: Manifest,
    config: Config,
    *,
    now: datetime,
    family: str | None = None,
    dry_run: bool = True,
    pins: Collection[str] = (),
) -> GcPlan:
    """Decide, for every run of every family (or of `family`), keep or delete, and why.

    `pins` are the markers of `.pins.json` (`pins.pin_markers`): with the config's pins
    they hold even when the manifest was written before them (a saved manifest shown
    while another writer holds the lock, say).
    """
    runs: dict[str, list[Entry]] = {name: [] for name in config.family_names()}
    markers = config.config_pins().keys() | set(pins)
    for entry in manifest.entries:
        held = is_pinned(markers, entry.id, entry.family, entry.directory, entry.run_key)
        if held and not entry.pinned:
            entry = entry._replace(pinned=True)
        runs.setdefault(entry.family, []).append(entry)
    chosen = [family] if family is not None else list(runs)
    return GcPlan(
        now,
        dry_run,
        {
            name: decide(runs[name], config.retention[name], now=now)
            for name in chosen
            if name in config.retention and runs.get(name)  # as the mission: families with runs
        },
    )


def plan_json(p: GcPlan, *, skipped: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """The `gc --json` shape (DESIGN §6)."""
    return {
        "dry_run": p.dry_run,
        "total_entries": len(p.verdicts),
        "delete": [
            {
                "id": v.item.id,
                "family": v.item.family,
                "size": v.item.size,
                "file_count": v.item.file_count,
                "reasons": list(v.reasons),
            }
            for v in p.delete
        ],
        "keep": [
            {"id": v.item.id, "family": v.item.family, "reasons": list(v.reasons)} for v in p.keep
        ],
        "skipped": list(skipped),
        "by_family": {
            name: {
                "keep": sum(v.keep for v in verdicts),
                "total": len(verdicts),
                "delete_bytes": sum(v.item.size for v in verdicts if not v.keep),
            }
            for name, verdicts in p.by_family.items()
        },
        "safety": p.safety_counts(),
    }


def summary_lines(p: GcPlan, size: Any) -> list[str]:
    """The mission's *GC Plan Summary* block; `size` formats bytes (e.g. cli.human_size)."""
    delete = p.delete
    safety = p.safety_counts()
    lines = [
        f"GC Plan Summary (DryRun: {'true' if p.dry_run else 'false'})",
        f"Total Entries: {len(p.verdicts)}",
        f"To Delete: {len(delete)} entries ({size(sum(v.item.size for v in delete))}, "
        f"{sum(v.item.file_count for v in delete)} files)",
        f"To Keep: {len(p.keep)} entries",
        f"Safety: {safety['pinned']} pinned, {safety['last_pass']} last-pass, "
        f"{safety['last_run']} last-run kept",
        "",
        "By Family:",
    ]
    for name, verdicts in p.by_family.items():
        kept = sum(v.keep for v in verdicts)
        freed = sum(v.item.size for v in verdicts if not v.keep)
        lines.append(f"  {name}: keep {kept}/{len(verdicts)}, delete {size(freed)}")
    return lines
