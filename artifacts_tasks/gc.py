"""Garbage collection: `plan` decides (pure), `apply` moves the doomed runs to the trash.

The plan is computed per family by `policy.decide` and is shown before anything moves:
the mission's *GC Plan Summary*, each run to delete with its reasons, and the JSON shape
of DESIGN §6 for scripts. `apply` validates the plan, checks every file is still as
scanned, and moves runs by rename under the journal protocol of `trash`.
"""

from __future__ import annotations

import contextlib
import errno
import gc as pygc
import json
import os
import stat
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from . import _fs, errors, trash
from .config import SAFETY_RULES, Config
from .errors import ApplyError, PlanValidationError, TrashError
from .manifest import Entry, Manifest, iso, shown_time
from .pins import is_pinned
from .policy import Verdict, decide
from .progress import NoProgress, Progress
from .text import human_size, md_cell, plural
from .trash import TrashItem


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
    with _no_cyclic_gc():
        return _plan(manifest, config, now, family, dry_run, pins)


@contextlib.contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """Pause Python's cycle collector: a plan allocates a few objects per run, none in a
    cycle, and on 100,000 runs the collector's passes over the manifest cost a third of
    the time. Reference counting still frees everything."""
    was_on = pygc.isenabled()
    pygc.disable()
    try:
        yield
    finally:
        if was_on:
            pygc.enable()


def _plan(
    manifest: Manifest,
    config: Config,
    now: datetime,
    family: str | None,
    dry_run: bool,
    pins: Collection[str],
) -> GcPlan:
    runs: dict[str, list[Entry]] = {name: [] for name in config.family_names()}
    markers = config.config_pins().keys() | set(pins)
    for entry in manifest.entries:
        held = markers and is_pinned(
            markers, entry.id, entry.family, entry.directory, entry.run_key
        )
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


# ---- applying a plan ---------------------------------------------------------------------


def validate(p: GcPlan, manifest: Manifest, config: Config, pins: Collection[str]) -> None:
    """Refuse a plan that would delete a protected run or reach outside the root.

    Checked from the manifest, independently of the reasons the policy gave, so a bug
    there cannot turn into a deletion.
    """
    from .trash import safe_rel

    last_run, last_pass = manifest.markers()
    markers = config.config_pins().keys() | set(pins)
    for v in p.delete:
        e = v.item
        held = [
            rule
            for rule, holds in (
                ("pinned", e.pinned or is_pinned(markers, e.id, e.family, e.directory, e.run_key)),
                ("last_pass", e.id in last_pass),
                ("last_run", e.id in last_run),
            )
            if holds or rule in v.reasons
        ]
        if held:
            raise PlanValidationError(f"{e.id} ({e.family}) is protected ({', '.join(held)})")
        prefix = f"{e.directory}/" if e.directory else ""
        for f in e.files:
            if (
                not safe_rel(f.path)
                or not f.path.startswith(prefix)
                or "/" in f.path[len(prefix) :]
            ):
                raise PlanValidationError(f"{e.id} names a path outside its run: {f.path!r}")


def check_as_scanned(root: Path, entry: Entry) -> tuple[str, int]:
    """(why the run must be skipped, or "", the device of its directory)."""
    try:
        fd = _fs.open_dir_under(root, entry.directory)
    except FileNotFoundError:
        return f"its directory {entry.directory!r} vanished since the scan", 0
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            return f"its directory {entry.directory!r} is now a symlink or not a directory", 0
        if exc.errno in errors.SYSTEM_ERRNOS:
            raise
        return f"its directory cannot be opened ({exc.strerror})", 0
    try:
        for f in entry.files:
            name = _fs.parent_and_name(f.path)[1]
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                return f"{f.path} vanished since the scan", 0
            except OSError as exc:
                if exc.errno in errors.SYSTEM_ERRNOS:
                    raise
                return f"{f.path} cannot be checked ({exc.strerror})", 0
            if not stat.S_ISREG(st.st_mode):
                return f"{f.path} is no longer a regular file", 0
            if (st.st_size, st.st_mtime_ns, st.st_ino) != (f.size, f.mtime_ns, f.inode):
                return f"{f.path} changed since the scan (size, mtime or inode)", 0
        return "", os.fstat(fd).st_dev
    finally:
        os.close(fd)


@dataclass
class Applied:
    """What an applied gc did."""

    moved: list[tuple[Verdict[Entry], str]]  # each run with its trash folder
    skipped: list[dict[str, Any]]
    reports: list[str]  # relative to the root
    purged: list[TrashItem]
    purge_problem: str = ""  # why purging the expired trash stopped (the gc itself stands)


def apply(
    root: Path,
    p: GcPlan,
    manifest: Manifest,
    config: Config,
    *,
    pins: Collection[str] = (),
    refresh: Callable[[], object],
    progress: Progress | None = None,
    purge_progress: Progress | None = None,
) -> Applied:
    """Move the plan's doomed runs into the trash; the caller holds the lock.

    `refresh` brings the manifest up to date (without recovering: the journal is ours).
    Any failure before the commit point undoes every move, refreshes, and raises.
    """
    validate(p, manifest, config, pins)
    fd = trash.trash_root(root)
    trash_dev = os.fstat(fd).st_dev
    os.close(fd)
    doomed: list[Verdict[Entry]] = []
    skipped: list[dict[str, Any]] = []
    for v in p.delete:
        why, dev = check_as_scanned(root, v.item)
        if why:
            skipped.append({"id": v.item.id, "family": v.item.family, "reason": why})
        elif dev != trash_dev:
            raise ApplyError(
                f"{root / trash.TRASH_DIR} is on another file system than "
                f"{root / v.item.directory}; gc moves by rename and never copies. Make "
                f"{trash.TRASH_DIR} a directory on the same file system (nothing was moved)"
            )
        else:
            doomed.append(v)
    purgeable = trash.expired(root, p.now - timedelta(days=config.trash_retention_days))
    if not doomed and not skipped and not purgeable:
        return Applied([], [], [], [])
    trash_ids = trash.new_trash_ids(root, [v.item.id for v in doomed])
    report_md, report_json = trash.report_names(root, "gc_report_", p.now)
    moves = {
        tid: [
            trash.Move(f.path, trash.trash_path(tid, f.path), f.size, f.mtime_ns, f.xxh3_128)
            for f in v.item.files
        ]
        for v, tid in zip(doomed, trash_ids, strict=True)
    }
    journal = trash.Journal(
        "gc",
        p.now,
        [m for ms in moves.values() for m in ms],
        trash_ids,
        prune=sorted({v.item.directory for v in doomed if v.item.directory}),
        reports=[report_md, report_json],
    )
    applied = Applied(
        list(zip(doomed, trash_ids, strict=True)),
        skipped,
        [f"{trash.TRASH_DIR}/{report_md}", f"{trash.TRASH_DIR}/{report_json}"],
        purgeable,
    )
    trash.write_journal(root, journal)
    _fs.failpoint("journal_written")
    mover = None
    try:
        bar = progress or NoProgress()
        bar.start(
            sum(v.item.file_count for v, _ in applied.moved),
            sum(v.item.size for v, _ in applied.moved),
        )
        with trash.Mover(root) as mover, contextlib.closing(bar):
            for v, tid in list(applied.moved):
                inodes = [f.inode for f in v.item.files]
                why = mover.put(tid, _record(v, p.now, report_md), moves[tid], inodes)
                bar.advance(v.item.file_count, v.item.size)
                if why:
                    applied.moved.remove((v, tid))
                    skipped.append({"id": v.item.id, "family": v.item.family, "reason": why})
            mover.current = ""  # every run moved: what fails now names its own file
        md, js = report(root, p, applied, config)
        _fs.atomic_write(root / trash.TRASH_DIR / report_md, md.encode("utf-8", "surrogateescape"))
        _fs.atomic_write(
            root / trash.TRASH_DIR / report_json, js.encode("utf-8", "surrogateescape")
        )
        _fs.failpoint("report_written")
        trash.commit(root, journal)
    except BaseException as exc:
        trash.abort(root, journal, refresh)
        if isinstance(exc, OSError):
            at = f" at {_fs.display_path(mover.current)}" if mover and mover.current else ""
            raise ApplyError(
                f"gc --apply failed{at} ({errors.why(exc)}); every file it had moved is "
                f"back in place, nothing was lost{errors.fix(exc)}"
            ) from exc
        raise
    trash.roll_forward(root, journal)
    try:
        refresh()
    except OSError as exc:
        raise ApplyError(
            f"gc --apply moved {len(applied.moved)} run(s) to the trash, but the manifest "
            f"could not be rewritten ({errors.why(exc)}); the next command finishes that"
            + errors.fix(exc)
        ) from exc
    _fs.failpoint("manifest_saved")
    trash.remove_journal(root)
    _fs.failpoint("journal_removed")
    try:
        trash.purge(root, purgeable, purge_progress)
    except TrashError as exc:
        applied.purge_problem = str(exc)
        applied.purged = [
            t for t in purgeable if not (root / trash.TRASH_DIR / t.trash_id).exists()
        ]
    return applied


def _record(v: Verdict[Entry], now: datetime, report_md: str) -> dict[str, Any]:
    return trash.record_of(
        v.item, v.item.files, now=now, operation="gc", reasons=v.reasons, report=report_md
    )


def applied_json(p: GcPlan, applied: Applied) -> dict[str, Any]:
    """`gc --apply --json`: the plan's shape (DESIGN §6) plus what was done."""
    doc = plan_json(p, skipped=applied.skipped)
    doc["applied"] = {
        "moved": [
            {
                "id": v.item.id,
                "family": v.item.family,
                "trash_id": tid,
                "size": v.item.size,
                "file_count": v.item.file_count,
            }
            for v, tid in applied.moved
        ],
        "reports": applied.reports,
        "purged": [
            {
                "trash_id": t.trash_id,
                "id": t.run_id,
                "trashed_at": t.record["trashed_at"] if t.record else None,
                "size": t.size,
            }
            for t in applied.purged
        ],
    }
    return doc


def report(root: Path, p: GcPlan, applied: Applied, config: Config) -> tuple[str, str]:
    """The gc report, Markdown and JSON: what moved where and why, what was kept and why."""
    moved_bytes = sum(v.item.size for v, _ in applied.moved)
    moved_files = sum(v.item.file_count for v, _ in applied.moved)
    md = [
        f"# GC Report {shown_time(p.now)} UTC",
        "",
        f"- Root: `{root}`",
        f"- Applied at: {iso(p.now)} (pid {os.getpid()})",
        f"- Moved to the trash: {plural(len(applied.moved), 'run')}, "
        f"{plural(moved_files, 'file')}, {human_size(moved_bytes)} — restore one with "
        "`cryptorun artifacts restore --id ID`",
        f"- Skipped (changed since the scan): {len(applied.skipped)}",
        f"- Purged from the trash (trashed more than {config.trash_retention_days} days ago): "
        f"{plural(len(applied.purged), 'folder')}",
        "",
        "```text",
        *summary_lines(p, human_size),
        "```",
        "",
        "## Moved to the trash",
        "",
    ]
    if applied.moved:
        md += [
            "| ID | Family | Timestamp | Size | Files | Trash folder | Reasons |",
            "|---|---|---|---|---|---|---|",
        ]
        md += [
            f"| {v.item.id} | {md_cell(v.item.family)} | {shown_time(v.item.timestamp)} | "
            f"{human_size(v.item.size)} | {v.item.file_count} | `.trash/{tid}/` | "
            f"{md_cell('; '.join(v.reasons))} |"
            for v, tid in applied.moved
        ]
    else:
        md.append("Nothing.")
    md += ["", "## Skipped", ""]
    if applied.skipped:
        md += ["| ID | Family | Why |", "|---|---|---|"]
        md += [
            f"| {s['id']} | {md_cell(s['family'])} | {md_cell(s['reason'])} |"
            for s in applied.skipped
        ]
    else:
        md.append("Nothing.")
    md += ["", "## Kept", "", "| ID | Family | Timestamp | Reasons |", "|---|---|---|---|"]
    md += [
        f"| {v.item.id} | {md_cell(v.item.family)} | {shown_time(v.item.timestamp)} | "
        f"{md_cell('; '.join(v.reasons))} |"
        for v in p.keep
    ]
    md += ["", "## Purged from the trash", ""]
    if applied.purged:
        md += ["| Trash folder | Run | Trashed at | Size |", "|---|---|---|---|"]
        md += [
            f"| {t.trash_id} | {t.run_id} | {t.record['trashed_at'] if t.record else '?'} | "
            f"{human_size(t.size)} |"
            for t in applied.purged
        ]
    else:
        md.append("Nothing.")
    doc = applied_json(p, applied)
    doc = {"format": "artifacts_tasks.gc_report", "version": 1, "applied_at": iso(p.now), **doc}
    return "\n".join(md) + "\n", json.dumps(doc) + "\n"  # ASCII: odd names stay valid JSON
