"""`cryptorun artifacts <command>` / `python -m artifacts_tasks <command>`: parse, call, print."""

from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import os
import sys
import traceback
import unicodedata
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn, TextIO

from . import _fs, errors
from .config import Config, load_config
from .errors import ArtifactsError, UnknownIdError, UsageError
from .manifest import Entry, Manifest, iso, load_manifest, now_utc, parse_iso, shown_time
from .progress import make_progress
from .scan import Refreshed, check_root, refresh
from .text import human_size, plural

Handler = Callable[[argparse.Namespace, "Context"], int]


class Context:
    """What every command needs: the root, the config, and where to print."""

    def __init__(
        self, args: argparse.Namespace, out: TextIO, err: TextIO, inp: TextIO | None = None
    ) -> None:
        self.root = Path(args.root)
        self.inp = inp if inp is not None else sys.stdin
        self.config_path = Path(args.config) if args.config is not None else None
        self.progress = not args.no_progress
        self.out = out
        self.err = err
        self._config: Config | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.config_path)
        return self._config

    def refresh(
        self,
        command: str,
        *,
        force: bool = False,
        need_manifest: bool = True,
        need_skipped: bool = False,
    ) -> Refreshed:
        """Take the lock and bring the manifest up to date with the tree."""
        check_root(self.root)
        _ = self.config  # a bad config fails before anything is touched
        with _fs.root_lock(self.root, command):
            return self.refresh_locked(
                force=force, need_manifest=need_manifest, need_skipped=need_skipped
            )

    def refresh_locked(self, **options: Any) -> Refreshed:
        """`refresh` for a command that holds the lock: recover, rescan, say what happened."""
        progress = make_progress("scan", enabled=self.progress)
        done = refresh(self.root, self.config, progress=progress, recover=True, **options)
        for note in done.notes:
            print(f"note: {note}", file=self.err)
        for warning in done.result.warnings:
            print(f"warning: {warning}", file=self.err)
        return done

    def checked_manifest(self) -> Manifest:
        """Before an apply (the lock held): refresh, then load the manifest as saved, so it
        is checked against its schema before anything moves."""
        self.refresh_locked(need_manifest=False)
        saved = load_manifest(self.root)
        if saved is None:
            raise AssertionError("a refresh leaves a manifest")
        return saved

    def refresh_quietly(self) -> None:
        """What an apply passes down: refresh the manifest under its own journal."""
        refresh(self.root, self.config, recover=False)

    def recover_if_possible(self, command: str) -> None:
        """For commands that only read: recover an interrupted apply when the lock is free."""
        from .trash import needs_recovery

        if not needs_recovery(self.root):
            return
        try:
            self.refresh(command, need_manifest=False)
        except (errors.LockHeldError, errors.NotWritableError) as exc:
            print(
                f"note: an apply's journal is present and cannot be recovered now: {exc}",
                file=self.err,
            )

    def check_family(self, family: str | None) -> None:
        """Refuse an unknown --family before anything is touched."""
        names = self.config.family_names()
        if family is not None and family not in names:
            raise UsageError(f"unknown family {family!r} (families: {', '.join(names)})")

    def current_manifest(self, command: str) -> Manifest:
        """A fresh manifest; when another writer holds the lock, the last one saved."""
        try:
            return self.refresh(command).manifest
        except (errors.LockHeldError, errors.NotWritableError) as exc:
            # Another writer, or a root this user may read but not write (read-only
            # mount, someone else's tree): show what was saved rather than nothing.
            saved = load_manifest(self.root)
            if saved is None:
                raise
            why = (
                f"cannot write in {exc.root} ({exc.why})"
                if isinstance(exc, errors.NotWritableError)
                else str(exc)
            )
            print(
                f"note: {why}; showing the manifest saved at {shown_time(saved.generated_at)}Z",
                file=self.err,
            )
            return saved


# ---- formatting -------------------------------------------------------------------------


def cell(text: str, width: int) -> str:
    """Pad to a display width (an emoji such as 📌 takes two columns)."""
    shown = sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)
    return text + " " * max(0, width - shown)


def status_cell(entry: Entry, last_run: set[str], last_pass: set[str]) -> str:
    marks = ("*" if entry.id in last_run else "") + ("+" if entry.id in last_pass else "")
    return entry.status + marks


# ---- commands ---------------------------------------------------------------------------


def cmd_scan(args: argparse.Namespace, ctx: Context) -> int:
    done = ctx.refresh("scan", force=args.force, need_manifest=False, need_skipped=args.verbose)
    r = done.result
    state = "manifest updated" if done.written else "manifest unchanged"
    if done.rebuilt_from:
        state = f"manifest rebuilt (the old one was refused: {done.rebuilt_from})"
    print(
        f"Scanned {plural(r.files_seen, 'file')} in {plural(r.runs, 'run')} "
        f"({plural(r.families, 'family')}): "
        f"{r.files_hashed} hashed ({human_size(r.bytes_hashed)}), {r.files_reused} unchanged; "
        f"{state}",
        file=ctx.out,
    )
    if args.verbose:
        for s in sorted(r.skipped, key=lambda s: s.path):
            print(f"  skipped {_fs.display_path(s.path)}: {s.reason}", file=ctx.out)
    return errors.EXIT_OK


def cmd_list(args: argparse.Namespace, ctx: Context) -> int:
    ctx.check_family(args.family)
    manifest = ctx.current_manifest("list")
    last_run, last_pass = manifest.markers()
    entries = [e for e in manifest.entries if args.family is None or e.family == args.family]
    if args.json:
        order = ctx.config.family_names()
        json.dump(list_json(entries, last_run, last_pass, order), ctx.out, indent=2)
        ctx.out.write("\n")
        return errors.EXIT_OK
    print_table(
        entries,
        last_run,
        last_pass,
        ctx.out,
        verbose=args.verbose,
        family_order=ctx.config.family_names(),
    )
    return errors.EXIT_OK


def list_json(
    entries: Sequence[Entry],
    last_run: set[str],
    last_pass: set[str],
    family_order: Sequence[str] = (),
) -> dict[str, Any]:
    rank = {name: i for i, name in enumerate(family_order)}  # config order, as the table
    by_family: dict[str, dict[str, int]] = {}
    for e in entries:
        t = by_family.setdefault(e.family, {"entries": 0, "files": 0, "size": 0})
        t["entries"] += 1
        t["files"] += e.file_count
        t["size"] += e.size
    return {
        "entries": [
            {
                "id": e.id,
                "family": e.family,
                "timestamp": iso(e.timestamp),
                "status": e.status,
                "pinned": e.pinned,
                "last_run": e.id in last_run,
                "last_pass": e.id in last_pass,
                "size": e.size,
                "file_count": e.file_count,
                "paths": sorted(f.path for f in e.files),
                "directory": e.directory,
                "run_key": e.run_key,
            }
            for e in entries
        ],
        "totals": {
            "entries": len(entries),
            "files": sum(e.file_count for e in entries),
            "size": sum(e.size for e in entries),
            "by_family": dict(sorted(by_family.items(), key=lambda kv: rank.get(kv[0], len(rank)))),
        },
    }


def print_table(
    entries: Sequence[Entry],
    last_run: set[str],
    last_pass: set[str],
    out: TextIO,
    *,
    verbose: bool,
    family_order: Sequence[str] = (),
) -> None:
    """The mission's table, then the legend and the totals per family."""
    if not entries:
        print("No runs found.", file=out)
        return
    statuses = {e.id: status_cell(e, last_run, last_pass) for e in entries}
    wid = max([12, *(len(e.id) for e in entries)])
    wfam = max([10, *(len(e.family) for e in entries)])
    wst = max([6, *(len(s) for s in statuses.values())])
    head = f"{'ID':<{wid}} {'FAMILY':<{wfam}} {'TIMESTAMP':<19} {'SIZE':<8} {'STATUS':<{wst}}"
    print(f"{head} PINNED FILES", file=out)
    totals: dict[str, list[int]] = {}
    for e in entries:
        pin = cell("📌" if e.pinned else "", 6)
        print(
            f"{e.id:<{wid}} {e.family:<{wfam}} {shown_time(e.timestamp)} "
            f"{human_size(e.size):<8} {statuses[e.id]:<{wst}} {pin} {e.file_count}",
            file=out,
        )
        if verbose:
            for f in e.files:
                print(f"    {_fs.display_path(f.path)}  {human_size(f.size)}  {f.status}", file=out)
        t = totals.setdefault(e.family, [0, 0, 0])
        t[0] += 1
        t[1] += e.file_count
        t[2] += e.size
    print("\nLegend: * = last run, + = last pass, 📌 = pinned", file=out)
    files = sum(t[1] for t in totals.values())
    size = sum(t[2] for t in totals.values())
    print(
        f"Totals: {plural(len(entries), 'run')}, {plural(files, 'file')}, {human_size(size)}",
        file=out,
    )
    rank = {name: i for i, name in enumerate(family_order)}
    for family, (n_runs, n_files, n_bytes) in sorted(
        totals.items(), key=lambda item: rank.get(item[0], len(rank))
    ):
        print(
            f"  {family}: {plural(n_runs, 'run')}, {plural(n_files, 'file')}, "
            f"{human_size(n_bytes)}",
            file=out,
        )


def cmd_gc(args: argparse.Namespace, ctx: Context) -> int:
    """Show the retention plan (the mission's summary, then each run to delete and why);
    with --apply, move those runs to the trash."""
    from . import gc
    from .pins import load_pins, pin_markers

    if args.apply and args.dry_run:
        raise UsageError("gc: --apply and --dry-run contradict each other; give one")
    if args.force and not args.apply:
        raise UsageError("gc: --force confirms --apply; without --apply gc deletes nothing")
    ctx.check_family(args.family)
    if not args.apply:
        manifest = ctx.current_manifest("gc")
        pins = pin_markers(load_pins(ctx.root))
        plan = gc.plan(manifest, ctx.config, now=now_utc(), family=args.family, pins=pins)
        if args.json:
            dump_json(gc.plan_json(plan), ctx.out)
        else:
            print_plan(plan, ctx.out, verbose=args.verbose)
        return errors.EXIT_OK
    if not args.force and not ctx.inp.isatty():
        raise UsageError(
            "gc --apply asks for confirmation, and stdin is not a terminal: add --force to "
            "apply without asking (nothing was changed)"
        )
    check_root(ctx.root)
    config = ctx.config
    with _fs.root_lock(ctx.root, "gc --apply"):
        saved = ctx.checked_manifest()
        pins = pin_markers(load_pins(ctx.root))
        plan = gc.plan(saved, config, now=now_utc(), family=args.family, dry_run=False, pins=pins)
        if not args.json:
            print_plan(plan, ctx.out, verbose=args.verbose)
        elif not args.force:  # the question and what it is about go to the terminal
            print_plan(plan, ctx.err, verbose=args.verbose)
        if (
            not args.force
            and plan.delete
            and not confirm(plan, ctx, ctx.err if args.json else ctx.out)
        ):
            print("Nothing was changed.", file=ctx.err if args.json else ctx.out)
            return errors.EXIT_OK
        applied = gc.apply(
            ctx.root,
            plan,
            saved,
            config,
            pins=pins,
            refresh=ctx.refresh_quietly,
            progress=make_progress("gc apply", enabled=ctx.progress),
            purge_progress=make_progress("purge", enabled=ctx.progress, unit="folders"),
        )
    if args.json:
        dump_json(gc.applied_json(plan, applied), ctx.out)
        return errors.EXIT_OK
    print_applied(applied, ctx, config.trash_retention_days)
    return errors.EXIT_OK


def print_plan(plan: Any, out: TextIO, *, verbose: bool) -> None:
    from . import gc

    for line in gc.summary_lines(plan, human_size):
        print(line, file=out)
    shown = [("To delete", plan.delete)] + ([("To keep", plan.keep)] if verbose else [])
    for title, verdicts in shown:
        print(f"\n{title}:" if verdicts else f"\n{title}: nothing", file=out)
        for v in verdicts:
            e = v.item
            print(
                f"  {e.id:<12} {e.family:<10} {shown_time(e.timestamp)} "
                f"{human_size(e.size):<8} {'; '.join(v.reasons)}",
                file=out,
            )


def confirm(plan: Any, ctx: Context, out: TextIO) -> bool:
    """Ask on the terminal; only `y` or `yes` goes ahead."""
    size = human_size(sum(v.item.size for v in plan.delete))
    print(
        f"\nMove {plural(len(plan.delete), 'run')} ({size}) to {ctx.root / '.trash'}? [y/N] ",
        end="",
        file=out,
        flush=True,
    )
    answer = ctx.inp.readline()
    return answer.strip().lower() in ("y", "yes")


def print_applied(applied: Any, ctx: Context, retention_days: int) -> None:
    out = ctx.out
    moved = applied.moved
    if moved:
        files = sum(v.item.file_count for v, _ in moved)
        size = human_size(sum(v.item.size for v, _ in moved))
        print(
            f"\nMoved {plural(len(moved), 'run')} ({plural(files, 'file')}, {size}) to "
            f"{ctx.root / '.trash'}/; undo one with `cryptorun artifacts restore --id ID`",
            file=out,
        )
    else:
        print("\nNothing was moved.", file=out)
    if applied.skipped:
        print(f"Skipped {plural(len(applied.skipped), 'run')} (left in place):", file=out)
        for s in applied.skipped:
            print(f"  {s['id']:<12} {s['family']:<10} {_fs.display_path(s['reason'])}", file=out)
    for rel in applied.reports[:1]:
        print(f"Report: {ctx.root / rel}", file=out)
    if applied.purge_problem:
        print(f"warning: {applied.purge_problem}", file=ctx.err)
    if applied.purged:
        size = human_size(sum(t.size for t in applied.purged))
        print(
            f"Purged {plural(len(applied.purged), 'trash folder')} trashed more than "
            f"{retention_days} days ago ({size}): {', '.join(t.trash_id for t in applied.purged)}",
            file=out,
        )


def dump_json(doc: Any, out: TextIO) -> None:
    json.dump(doc, out, indent=2)
    out.write("\n")


def cmd_restore(args: argparse.Namespace, ctx: Context) -> int:
    """Move a trashed run back where it was; refuse to overwrite anything."""
    from . import trash

    check_root(ctx.root)
    _ = ctx.config
    with _fs.root_lock(ctx.root, "restore"):
        ctx.refresh_locked(need_manifest=False)
        item = trash.find(ctx.root, args.id)
        trash.restore(
            ctx.root,
            item,
            now=now_utc(),
            refresh=ctx.refresh_quietly,
            progress=make_progress("restore", enabled=ctx.progress),
        )
    r = item.record
    assert r is not None
    print(
        f"Restored {r['id']} ({r['family']}, {shown_time(parse_iso(r['timestamp']))}): "
        f"{plural(r['file_count'], 'file')}, {human_size(r['size'])} back in place "
        f"from {ctx.root / '.trash' / item.trash_id}/",
        file=ctx.out,
    )
    if r["operation"] == "compact":
        hint = (
            "The next `compact --apply` cleans it again; to keep it as it is, set "
            "compaction.markdown.remove_empty_sections (or canonical_headers) to false"
        )
    else:
        hint = (
            "Unless it is pinned, the next `gc --apply` may trash it again; to keep it: "
            f"cryptorun artifacts pin --id {r['id']} --on"
        )
    print(hint, file=ctx.out)
    return errors.EXIT_OK


def cmd_trash_list(args: argparse.Namespace, ctx: Context) -> int:
    from . import trash

    check_root(ctx.root)
    ctx.recover_if_possible("trash list")
    found = trash.items(ctx.root)
    days = ctx.config.trash_retention_days
    now = now_utc()
    if args.json:
        dump_json(
            {
                "retention_days": days,
                "items": [
                    {
                        "trash_id": t.trash_id,
                        "id": t.run_id,
                        "size": t.size,
                        "record": t.record,
                        "problem": t.problem or None,
                    }
                    for t in found
                ],
                "reports": trash.reports(ctx.root),
            },
            ctx.out,
        )
        return errors.EXIT_OK
    if not found:
        print(f"The trash is empty ({ctx.root / '.trash'}).", file=ctx.out)
    else:
        print(
            f"{'TRASH ID':<12} {'FAMILY':<10} {'RUN TIMESTAMP':<19} {'TRASHED':<19} "
            f"{'SIZE':<8} {'FILES':<5} PURGE",
            file=ctx.out,
        )
    for t in found:
        if t.record is None:
            print(f"{t.trash_id:<12} no usable record, never purged: {t.problem}", file=ctx.out)
            continue
        r = t.record
        trashed = parse_iso(r["trashed_at"])
        left = (trashed + timedelta(days=days) - now).total_seconds()
        due = f"in {int(left // 86400)}d {int(left % 86400 // 3600)}h" if left > 0 else "due"
        print(
            f"{t.trash_id:<12} {r['family']:<10} {shown_time(parse_iso(r['timestamp']))} "
            f"{shown_time(trashed)} {human_size(t.size):<8} {r['file_count']:<5} {due}",
            file=ctx.out,
        )
    if found:
        total = human_size(sum(t.size for t in found))
        print(
            f"\n{plural(len(found), 'folder')}, {total}; purged {days} days after trashing "
            "(trash.retention_days) by `gc --apply` and `trash purge`",
            file=ctx.out,
        )
    return errors.EXIT_OK


def cmd_trash_purge(args: argparse.Namespace, ctx: Context) -> int:
    from . import trash
    from .policy import Duration

    text = args.older_than
    if text is None:
        text = f"{ctx.config.trash_retention_days}d"
    try:
        duration = Duration.parse(text)
    except ValueError as exc:
        raise UsageError(f"trash purge --older-than: {exc}") from None
    now = now_utc()
    cutoff = duration.before(now)
    check_root(ctx.root)
    with _fs.root_lock(ctx.root, "trash purge"):
        ctx.refresh_locked(need_manifest=False)
        doomed = trash.expired(ctx.root, cutoff)
        bar = make_progress("purge", enabled=ctx.progress, unit="folders")
        trash.purge(ctx.root, doomed, bar)
    if not doomed:
        print(f"Nothing in the trash was trashed more than {duration} ago.", file=ctx.out)
        return errors.EXIT_OK
    size = human_size(sum(t.size for t in doomed))
    print(
        f"Purged {plural(len(doomed), 'trash folder')} trashed more than {duration} ago "
        f"({size}): {', '.join(t.trash_id for t in doomed)}",
        file=ctx.out,
    )
    return errors.EXIT_OK


def cmd_explain(args: argparse.Namespace, ctx: Context) -> int:
    """Why one run is kept or would be deleted: each rule, its counters, the safety rules."""
    import dataclasses

    from . import gc
    from .pins import load_pins, pin_markers

    manifest = ctx.current_manifest("explain")
    by_id = manifest.by_id()
    if args.id not in by_id:
        from . import trash

        try:
            item: trash.TrashItem | None = trash.find(ctx.root, args.id)
        except errors.ArtifactsError:
            item = None
        if item is not None and item.record is not None:
            r = item.record
            raise UsageError(
                f"{args.id} is in the trash ({ctx.root / '.trash' / item.trash_id}), "
                f"moved there by {r['operation']} at {shown_time(parse_iso(r['trashed_at']))}"
                f"Z because: {'; '.join(r['reasons'])}; `restore --id {item.trash_id}` "
                "puts it back"
            )
    entry = find_entry(manifest, args.id)
    pins = pin_markers(load_pins(ctx.root))
    plan = gc.plan(manifest, ctx.config, now=now_utc(), family=entry.family, pins=pins)
    verdicts = plan.by_family.get(entry.family, [])
    v = next(v for v in verdicts if v.item.id == entry.id)
    retention = ctx.config.retention[entry.family]
    rules = {
        k: (list(val) if isinstance(val, tuple) else val)
        for k, val in dataclasses.asdict(retention).items()
        if val not in (0, None, ())
    }
    newest = verdicts[0].item.id if verdicts else None
    passing = [x.item for x in verdicts if x.item.status == "pass"]
    newest_pass = max(passing, key=Entry.sort_key).id if passing else None
    safety = {
        "pinned": v.item.pinned,
        "last_run": entry.id == max((x.item for x in verdicts), key=Entry.sort_key).id,
        "last_pass": entry.id == newest_pass,
    }
    doc = {
        "id": entry.id,
        "family": entry.family,
        "timestamp": iso(entry.timestamp),
        "status": entry.status,
        "size": entry.size,
        "file_count": entry.file_count,
        "keep": v.keep,
        "rank": v.rank,
        "family_runs": len(verdicts),
        "policy": rules,
        "matches": [m._asdict() for m in v.matches],
        "counters": v.counters,
        "safety": safety,
        "reasons": list(v.reasons),
    }
    if args.json:
        dump_json(doc, ctx.out)
        return errors.EXIT_OK
    out = ctx.out
    print(
        f"Run {entry.id} ({entry.family}, {shown_time(entry.timestamp)}, {entry.status}, "
        f"{plural(entry.file_count, 'file')}, {human_size(entry.size)})",
        file=out,
    )
    verdict = "kept" if v.keep else "would be deleted by the next `gc --apply`"
    print(f"Verdict: {verdict}", file=out)
    print(f"Rank: {v.rank} of {len(verdicts)} in {entry.family}, newest first", file=out)
    policy = ", ".join(f"{k}: {val}" for k, val in rules.items()) or "none"
    print(f"Policy for {entry.family}: {policy}", file=out)
    print("Why:", file=out)
    for reason in v.reasons:
        print(f"  - {reason}", file=out)
    if v.matches:
        print("Rules that keep it (restic's words):", file=out)
        for m in v.matches:
            print(f"  - {m.rule}: {m.restic}", file=out)
    if v.counters:
        left = ", ".join(f"{k} {n if n >= 0 else 'unlimited'}" for k, n in v.counters.items())
        print(f"Left after it: {left}", file=out)
    print("Safety rules:", file=out)
    print(
        f"  - pinned: {'yes' if safety['pinned'] else 'no'}"
        + ("" if safety["pinned"] else f" (`pin --id {entry.id} --on` keeps it for good)"),
        file=out,
    )
    print(
        f"  - last_run: {'yes' if safety['last_run'] else 'no'}"
        + (f" (the newest is {newest})" if not safety["last_run"] and newest else ""),
        file=out,
    )
    print(
        f"  - last_pass: {'yes' if safety['last_pass'] else 'no'}"
        + (
            f" (the newest passing run is {newest_pass})"
            if not safety["last_pass"] and newest_pass
            else ""
        ),
        file=out,
    )
    return errors.EXIT_OK


def cmd_report(args: argparse.Namespace, ctx: Context) -> int:
    """Write the report (Markdown, JSON, HTML) under <root>/.reports/."""
    from . import report
    from .pins import load_pins, pin_markers

    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    bad = [f for f in formats if f not in report.FORMATS]
    if bad or not formats:
        raise UsageError(
            f"report --format: unknown format {bad[0] if bad else '(none)'!r} "
            f"(choose from {','.join(report.FORMATS)})"
        )
    check_root(ctx.root)
    config = ctx.config
    with _fs.root_lock(ctx.root, "report"):
        manifest = ctx.refresh_locked().manifest
        pins = pin_markers(load_pins(ctx.root))
        data = report.build(ctx.root, manifest, config, now=now_utc(), pins=pins)
        folder = ctx.root / report.REPORTS_DIR
        if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
            raise errors.UnsafeFileError(str(folder), "is not a directory")
        folder.mkdir(exist_ok=True)
        render = {"md": report.to_markdown, "json": report.to_json, "html": report.to_html}
        written = []
        for fmt in formats:
            path = folder / f"report.{fmt}"
            # A non-UTF-8 root path: escaped in Markdown and JSON, replaced in the HTML page
            # (which says it is UTF-8).
            errors_mode = "replace" if fmt == "html" else "surrogateescape"
            _fs.atomic_write(path, render[fmt](data).encode("utf-8", errors_mode))
            written.append(path)
    t = data["totals"]
    print(
        f"Report of {plural(t['runs'], 'run')} ({human_size(t['size'])}; "
        f"{human_size(t['reclaimable_bytes'])} reclaimable): " + ", ".join(str(p) for p in written),
        file=ctx.out,
    )
    return errors.EXIT_OK


def cmd_compact(args: argparse.Namespace, ctx: Context) -> int:
    """Plan compaction (a dry run), or apply it."""
    from . import compact

    ctx.check_family(args.family)
    if not args.apply:
        manifest = ctx.current_manifest("compact")
        plans = compact.plan(ctx.root, manifest, ctx.config, family=args.family)
        if args.json:
            dump_json(compact_json(plans, dry_run=True), ctx.out)
        else:
            print_compact(
                plans,
                ctx.out,
                verbose=args.verbose,
                dry_run=True,
                family_order=ctx.config.family_names(),
            )
        return errors.EXIT_OK
    check_root(ctx.root)
    config = ctx.config
    with _fs.root_lock(ctx.root, "compact --apply"):
        saved = ctx.checked_manifest()
        plans = compact.plan(ctx.root, saved, config, family=args.family, estimate=False)
        applied = compact.apply(
            ctx.root,
            plans,
            config,
            now=now_utc(),
            refresh=ctx.refresh_quietly,
            progress=make_progress("compact", enabled=ctx.progress),
        )
    if args.json:
        doc = compact_json(plans, dry_run=False)
        doc["reports"] = applied.reports
        dump_json(doc, ctx.out)
        return errors.EXIT_OK
    print_compact(
        plans,
        ctx.out,
        verbose=args.verbose,
        dry_run=False,
        family_order=config.family_names(),
    )
    if applied.done:
        before = sum(p.size for p in applied.done)
        after = sum(p.expected or 0 for p in applied.done)
        print(
            f"\nCompacted {plural(len(applied.done), 'file')}: {human_size(before)} -> "
            f"{human_size(after)}; report: {ctx.root / applied.reports[0]}",
            file=ctx.out,
        )
    else:
        report = f"; report: {ctx.root / applied.reports[0]}" if applied.reports else ""
        print(f"\nNothing was compacted{report}.", file=ctx.out)
    return errors.EXIT_OK


def compact_json(plans: Sequence[Any], *, dry_run: bool) -> dict[str, Any]:
    by_family: dict[str, dict[str, int]] = {}
    for p in plans:
        f = by_family.setdefault(
            p.entry.family, {"files": 0, "compact": 0, "size": 0, "expected_size": 0}
        )
        f["files"] += 1
        f["size"] += p.size
        f["expected_size"] += p.size if p.skip else (p.expected or p.size)
        f["compact"] += not p.skip
    return {
        "dry_run": dry_run,
        "files": [p.to_json() for p in plans],
        "by_family": by_family,
    }


def print_compact(
    plans: Sequence[Any],
    out: TextIO,
    *,
    verbose: bool,
    dry_run: bool,
    family_order: Sequence[str] = (),
) -> None:
    chosen = [p for p in plans if not p.skip]
    before = sum(p.size for p in chosen)
    after = sum(p.expected if p.expected is not None else p.size for p in chosen)
    print(f"Compaction Plan (DryRun: {'true' if dry_run else 'false'})", file=out)
    print(
        f"To Compact: {plural(len(chosen), 'file')} ({human_size(before)} -> "
        f"{human_size(after)}); left alone: {len(plans) - len(chosen)}",
        file=out,
    )
    families: dict[str, list[Any]] = {name: [] for name in family_order}
    for p in plans:
        families.setdefault(p.entry.family, []).append(p)
    families = {name: ps for name, ps in families.items() if ps}
    print("\nBy Family:", file=out)
    for name, ps in families.items():
        c = [p for p in ps if not p.skip]
        print(
            f"  {name}: compact {len(c)}/{len(ps)}, {human_size(sum(p.size for p in c))} -> "
            f"{human_size(sum(p.expected or p.size for p in c))}",
            file=out,
        )
    shown = plans if verbose else chosen
    if shown:
        print("\nFiles:", file=out)
    for p in shown:
        expected = "?" if p.expected is None else human_size(p.expected)
        note = p.skip or (
            f"{len(p.removed)} empty section(s), {p.canonicalised} heading(s) to ATX"
            if p.kind == "markdown"
            else "lossless"
        )
        print(
            f"  {_fs.display_path(p.path)}  {p.kind}  {human_size(p.size)} -> "
            f"{expected if not p.skip else '-'}  {note}",
            file=out,
        )
        for h in p.removed if verbose else ():
            print(f"      removes line {h['line']}: {'#' * h['level']} {h['text']}", file=out)
    if not verbose and len(chosen) < len(plans):
        reasons: dict[str, int] = {}
        for p in plans:
            if p.skip:
                key = p.skip.split(" (")[0]
                reasons[key] = reasons.get(key, 0) + 1
        summary = ", ".join(f"{n} {why}" for why, n in sorted(reasons.items()))
        print(f"\nLeft alone ({summary}); --verbose lists them", file=out)


def cmd_cat(args: argparse.Namespace, ctx: Context) -> int:
    """Write an artifact's original bytes to stdout, compacted or not."""
    from .compact import read_original
    from .jsonl_codec import CodecError

    given = Path(args.file)
    path = given if given.exists() or given.is_absolute() else ctx.root / given
    if not path.is_file():
        raise UsageError(f"{args.file}: no such file here or under {ctx.root}")
    sink = getattr(ctx.out, "buffer", None)
    try:
        for chunk in read_original(path):
            if sink is not None:
                sink.write(chunk)
            else:
                ctx.out.write(chunk.decode("utf-8", "surrogateescape"))
        if sink is not None:
            sink.flush()
    except CodecError as exc:
        raise errors.ArtifactsError(f"{path}: cannot be decoded: {exc}") from None
    return errors.EXIT_OK


def cmd_verify(args: argparse.Namespace, ctx: Context) -> int:
    """Recheck every file against its recorded checksum; exit 1 if any differs."""
    from .verify import verify

    check_root(ctx.root)
    config = ctx.config
    ctx.recover_if_possible("verify")
    manifest = load_manifest(ctx.root)
    if manifest is None:
        raise UsageError(f"{ctx.root} has no manifest yet; run `cryptorun artifacts scan` first")
    progress = make_progress("verify", enabled=ctx.progress)
    buffer = config.indexing.checksum_buffer_size_kb * 1024
    problems = list(verify(ctx.root, manifest, buffer=buffer, progress=progress))
    files = sum(e.file_count for e in manifest.entries)
    if args.json:
        doc = {
            "manifest_generated_at": iso(manifest.generated_at),
            "files": files,
            "ok": files - len(problems),
            "problems": [
                {"id": p.entry_id, "path": p.path, "problem": p.problem} for p in problems
            ],
        }
        json.dump(doc, ctx.out, indent=2)
        ctx.out.write("\n")
    else:
        for p in problems:
            print(f"{p.entry_id}  {_fs.display_path(p.path)}: {p.problem}", file=ctx.out)
        verdict = "all as recorded" if not problems else f"{plural(len(problems), 'problem')}"
        print(
            f"Verified {plural(files, 'file')} in {plural(len(manifest.entries), 'run')} "
            f"against the manifest of {shown_time(manifest.generated_at)}Z: {verdict}",
            file=ctx.out,
        )
    return errors.EXIT_OK if not problems else errors.EXIT_FAILED


def cmd_pin(args: argparse.Namespace, ctx: Context) -> int:
    from .pins import set_pin

    check_root(ctx.root)
    config = ctx.config
    with _fs.root_lock(ctx.root, "pin"):
        manifest = ctx.refresh_locked().manifest
        entry = find_entry(manifest, args.id)
        config_family = config.config_pins().get(entry.id)
        if not args.on and config_family is not None:
            raise UsageError(
                f"{entry.id} is pinned in {config.path} (retention.{config_family}.pin); "
                "remove it there to unpin it"
            )
        changed = set_pin(ctx.root, entry, on=args.on, now=now_utc())
        if changed:
            refresh(ctx.root, config)
    when = shown_time(entry.timestamp)
    verb = "Pinned" if args.on else "Unpinned"
    note = "" if changed else f" (it already was {'pinned' if args.on else 'not pinned'})"
    print(f"{verb} {entry.id} ({entry.family}, {when}){note}", file=ctx.out)
    return errors.EXIT_OK


def find_entry(manifest: Manifest, entry_id: str) -> Entry:
    """The entry with this exact id, or an error naming the close matches."""
    by_id = manifest.by_id()
    if entry_id in by_id:
        return by_id[entry_id]
    ids = sorted(by_id)
    close = [i for i in ids if i.startswith(entry_id)] if entry_id else []
    close += [
        c for c in difflib.get_close_matches(entry_id, ids, n=3, cutoff=0.5) if c not in close
    ]
    raise UnknownIdError(entry_id, close[:5])


# ---- parser -----------------------------------------------------------------------------


def _global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """--root/--config/--no-progress/--debug, accepted before or after the command name."""

    def d(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    g = parser.add_argument_group("global options")
    g.add_argument(
        "--root",
        default=d("artifacts"),
        metavar="DIR",
        help="the artifacts tree (default: ./artifacts)",
    )
    g.add_argument(
        "--config",
        default=d(None),
        metavar="FILE",
        help="config file (default: ./config/artifacts.yaml, built-in defaults if absent)",
    )
    g.add_argument(
        "--no-progress", action="store_true", default=d(False), help="never draw progress bars"
    )
    g.add_argument(
        "--debug", action="store_true", default=d(False), help="show tracebacks for errors"
    )


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (what, and where to look) and exit 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see --help)")


def _an_id(value: str) -> str:
    """An id as `list` and `trash list` print them: never a path, checked before the
    command touches anything (a usage error leaves even a stale manifest as it is)."""
    if not value or value in (".", "..") or any(c in value for c in "/\\\0"):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an id: copy one from `list` or `trash list`"
        )
    return value


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = _Parser(
        prog=prog,
        description="Keep a tree of verification artifacts at a sane size without losing what "
        "matters.",
    )
    _global_options(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        _global_options(p, suppress=True)
        p.set_defaults(handler=handler)
        return p

    p = command("scan", cmd_scan, "rescan the tree into the manifest (incremental)")
    p.add_argument(
        "--force",
        action="store_true",
        help="rehash every file; rebuild a refused manifest from the file system",
    )
    p.add_argument("--verbose", action="store_true", help="say what was skipped and why")

    p = command("list", cmd_list, "list the runs: id, family, time, size, status, pins")
    p.add_argument("--family", metavar="F", help="only this family")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--verbose", action="store_true", help="show each run's files")

    p = command("pin", cmd_pin, "pin a run so that gc never deletes it (or unpin it)")
    p.add_argument(
        "--id", required=True, type=_an_id, metavar="ID", help="the run's id (see `list`)"
    )
    state = p.add_mutually_exclusive_group(required=True)
    state.add_argument("--on", dest="on", action="store_true", help="pin it")
    state.add_argument("--off", dest="on", action="store_false", help="unpin it")

    p = command("gc", cmd_gc, "plan retention (a dry run), or apply it: move runs to the trash")
    p.add_argument("--dry-run", action="store_true", help="show the plan only (the default)")
    p.add_argument(
        "--apply",
        action="store_true",
        help="move the runs to delete into .trash/ (asks on a terminal unless --force)",
    )
    p.add_argument(
        "--force", action="store_true", help="with --apply: do not ask (needed without a terminal)"
    )
    p.add_argument("--family", metavar="F", help="only this family")
    p.add_argument("--json", action="store_true", help="machine-readable plan (and result)")
    p.add_argument("--verbose", action="store_true", help="also list each kept run and why")

    p = command("restore", cmd_restore, "move a trashed run back where it was")
    p.add_argument(
        "--id",
        required=True,
        type=_an_id,
        metavar="ID",
        help="the run's id or trash folder (see `trash list`)",
    )

    p = command("trash", cmd_trash_list, "the trash: list it, or purge what has expired")
    trash_sub = p.add_subparsers(dest="trash_command", metavar="ACTION", required=True)
    t = trash_sub.add_parser("list", help="trashed runs: when, why, when they expire")
    _global_options(t, suppress=True)
    t.add_argument("--json", action="store_true", help="machine-readable output")
    t.set_defaults(handler=cmd_trash_list)
    t = trash_sub.add_parser("purge", help="delete for good what was trashed long enough ago")
    _global_options(t, suppress=True)
    t.add_argument(
        "--older-than",
        metavar="DURATION",
        help="trashed more than this long ago, e.g. 30d, 12h, 1y2m (default: trash.retention_days)",
    )
    t.set_defaults(handler=cmd_trash_purge)

    p = command("report", cmd_report, "write the report (md, json, html) under <root>/.reports/")
    p.add_argument(
        "--format",
        default="md,json,html",
        metavar="LIST",
        help="comma-separated: md, json, html (default: all three)",
    )

    p = command("explain", cmd_explain, "why a run is kept or would be deleted, rule by rule")
    p.add_argument(
        "--id", required=True, type=_an_id, metavar="ID", help="the run's id (see `list`)"
    )
    p.add_argument("--json", action="store_true", help="machine-readable")

    p = command("compact", cmd_compact, "plan compaction (a dry run), or apply it")
    p.add_argument("--apply", action="store_true", help="compact the files the plan lists")
    p.add_argument("--family", metavar="F", help="only this family")
    p.add_argument("--json", action="store_true", help="machine-readable plan (and result)")
    p.add_argument(
        "--verbose", action="store_true", help="also list files left alone, and each heading"
    )

    p = command("cat", cmd_cat, "print an artifact's original bytes, compacted or not")
    p.add_argument("file", metavar="FILE", help="relative to the current directory or the root")

    p = command(
        "verify",
        cmd_verify,
        "recheck every file against its recorded checksum (exit 1 if any differs)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable result")
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    prog: str = "python -m artifacts_tasks",
    out: TextIO | None = None,
    err: TextIO | None = None,
    inp: TextIO | None = None,
) -> int:
    """Run one command; return its exit code (callable from tests without a subprocess)."""
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(prog)
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        print(f"usage error: {exc}", file=err)
        return exc.exit_code
    except SystemExit as exc:  # --help
        return errors.EXIT_OK if exc.code in (0, None) else errors.EXIT_USAGE
    try:
        ctx = Context(args, out, err, inp)
        code: int = args.handler(args, ctx)
        return code
    except ArtifactsError as exc:
        if args.debug:
            traceback.print_exc(file=err)
        print(f"{exc.label}: {exc}", file=err)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=err)
        return errors.EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`list | head`): not an error; keep Python from complaining.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return errors.EXIT_OK
    except OSError as exc:
        # The file system refused (permissions, a full disk, an I/O error): not a bug, and
        # every apply has undone or journaled its work before this reaches here.
        if args.debug:
            traceback.print_exc(file=err)
        where = "" if exc.filename is not None else f" (under {args.root})"
        print(f"error: {args.command}: {errors.why(exc)}{where}{errors.fix(exc)}", file=err)
        return errors.EXIT_FAILED
    except Exception as exc:  # a bug: say so in one line unless --debug
        if args.debug:
            traceback.print_exc(file=err)
        print(
            f"internal error: {type(exc).__name__}: {exc}"
            + ("" if args.debug else " (rerun with --debug for details)"),
            file=err,
        )
        return errors.EXIT_INTERNAL


def console_main() -> int:
    """The `cryptorun` console script: `cryptorun artifacts <command> ...`."""
    argv = sys.argv[1:]
    # Global options may come first: `cryptorun --root X artifacts list`.
    i = 0
    while i < len(argv) and argv[i].startswith("-") and argv[i] != "artifacts":
        takes_value = argv[i] in ("--root", "--config")
        i += 2 if takes_value else 1
    if i >= len(argv) or argv[i] != "artifacts":
        if any(a in ("-h", "--help") for a in argv[:i]) or not argv:
            print(
                "usage: cryptorun artifacts COMMAND [options]   (try: cryptorun artifacts --help)"
            )
            return errors.EXIT_OK if argv else errors.EXIT_USAGE
        print("error: usage: cryptorun artifacts COMMAND [options]", file=sys.stderr)
        return errors.EXIT_USAGE
    return main(argv[:i] + argv[i + 1 :], prog="cryptorun artifacts")
