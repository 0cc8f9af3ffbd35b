"""The report: what exists, what the policy would reclaim, what the trash holds.

`build` gathers the facts once (pure but for reading the trash and its reports); `to_json`,
`to_markdown` and `to_html` render them. The HTML page is one self-contained file — inline
CSS and SVG, no script, no network — with three charts: disk use by family, runs over
time (colour = status, filled = kept, hollow = the next `gc --apply` deletes it), and the
trash by the day it expires.
"""

from __future__ import annotations

import contextlib
import html
import json
from collections.abc import Collection
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from . import gc, trash
from .config import Config
from .manifest import Manifest, iso, parse_iso, shown_time
from .text import human_size, plural

FORMATS = ("md", "json", "html")
REPORTS_DIR = ".reports"


def build(
    root: Path, manifest: Manifest, config: Config, *, now: datetime, pins: Collection[str] = ()
) -> dict[str, Any]:
    """Every fact the report shows, as plain data (the JSON report is exactly this)."""
    plan = gc.plan(manifest, config, now=now, pins=pins)
    verdicts = {v.item.id: v for v in plan.verdicts}
    families = []
    for name in config.family_names():
        runs = [e for e in manifest.entries if e.family == name]
        if not runs:
            continue
        doomed = [e for e in runs if e.id in verdicts and not verdicts[e.id].keep]
        families.append(
            {
                "family": name,
                "runs": len(runs),
                "pass": sum(e.status == "pass" for e in runs),
                "fail": sum(e.status == "fail" for e in runs),
                "other": sum(e.status not in ("pass", "fail") for e in runs),
                "size": sum(e.size for e in runs),
                "files": sum(e.file_count for e in runs),
                "oldest": iso(min(e.timestamp for e in runs)),
                "newest": iso(max(e.timestamp for e in runs)),
                "pinned": sum(e.pinned for e in verdicts_items(runs, verdicts)),
                "reclaimable_runs": len(doomed),
                "reclaimable_bytes": sum(e.size for e in doomed),
            }
        )
    run_rows = [
        {
            "id": e.id,
            "family": e.family,
            "timestamp": iso(e.timestamp),
            "status": e.status,
            "size": e.size,
            "keep": verdicts[e.id].keep if e.id in verdicts else True,
            "reasons": list(verdicts[e.id].reasons) if e.id in verdicts else [],
        }
        for e in manifest.entries
    ]
    days = config.trash_retention_days
    items = []
    for t in trash.items(root):
        when = t.trashed_at
        items.append(
            {
                "trash_id": t.trash_id,
                "id": t.run_id,
                "family": t.record["family"] if t.record else None,
                "trashed_at": iso(when) if when else None,
                "expires_at": iso(when + timedelta(days=days)) if when else None,
                "size": t.size,
                "operation": t.record["operation"] if t.record else None,
            }
        )
    return {
        "format": "artifacts_tasks.report",
        "version": 1,
        "generated_at": iso(now),
        "root": str(root),
        "totals": {
            "runs": len(manifest.entries),
            "files": sum(e.file_count for e in manifest.entries),
            "size": sum(e.size for e in manifest.entries),
            "reclaimable_runs": len(plan.delete),
            "reclaimable_bytes": sum(v.item.size for v in plan.delete),
        },
        "families": families,
        "runs": run_rows,
        "last_gc": _last_report(root, "gc_report_"),
        "last_compaction": _last_report(root, "compact_report_"),
        "trash": {
            "retention_days": days,
            "items": items,
            "size": sum(i["size"] for i in items),
        },
    }


def verdicts_items(runs: list[Any], verdicts: dict[str, Any]) -> list[Any]:
    """The runs as the plan saw them (with pins from `.pins.json` applied)."""
    return [verdicts[e.id].item if e.id in verdicts else e for e in runs]


def _last_report(root: Path, prefix: str) -> dict[str, Any] | None:
    """The newest report of one kind in the trash, summarised (None when there is none)."""
    names = sorted(
        (n for n in trash.reports(root) if n.startswith(prefix) and n.endswith(".json")),
        reverse=True,
    )
    for name in names:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            doc = json.loads((root / trash.TRASH_DIR / name).read_text())
            if prefix == "gc_report_":
                moved = doc["applied"]["moved"]
                return {
                    "report": f"{trash.TRASH_DIR}/{name[:-5]}.md",
                    "applied_at": doc["applied_at"],
                    "moved_runs": len(moved),
                    "moved_bytes": sum(m["size"] for m in moved),
                    "skipped": len(doc["skipped"]),
                    "purged": len(doc["applied"]["purged"]),
                }
            done = doc["compacted"]
            return {
                "report": f"{trash.TRASH_DIR}/{name[:-5]}.md",
                "applied_at": doc["applied_at"],
                "files": len(done),
                "bytes_before": sum(f["size"] for f in done),
                "bytes_after": sum(f["expected_size"] or 0 for f in done),
            }
    return None


# ---- JSON and Markdown -------------------------------------------------------------------


def to_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2) + "\n"


def to_markdown(data: dict[str, Any]) -> str:
    t = data["totals"]
    md = [
        f"# Artifacts report — {data['generated_at'].replace('T', ' ').rstrip('Z')} UTC",
        "",
        f"Root `{data['root']}`: {plural(t['runs'], 'run')}, {plural(t['files'], 'file')}, "
        f"{human_size(t['size'])}. The current policy would reclaim "
        f"{plural(t['reclaimable_runs'], 'run')} ({human_size(t['reclaimable_bytes'])}).",
        "",
        "## Families",
        "",
        "| Family | Runs | Pass | Fail | Other | Size | Oldest | Newest | Pinned | Reclaimable |",
        "|---|---:|---:|---:|---:|---:|---|---|---:|---:|",
    ]
    for f in data["families"]:
        md.append(
            f"| {f['family']} | {f['runs']} | {f['pass']} | {f['fail']} | {f['other']} | "
            f"{human_size(f['size'])} | {_day(f['oldest'])} | {_day(f['newest'])} | "
            f"{f['pinned']} | {f['reclaimable_runs']} runs, {human_size(f['reclaimable_bytes'])} |"
        )
    md += ["", "## Last operations", ""]
    gc_last, cp_last = data["last_gc"], data["last_compaction"]
    md.append(
        f"- Last gc: {_day(gc_last['applied_at'])}, {plural(gc_last['moved_runs'], 'run')} "
        f"({human_size(gc_last['moved_bytes'])}) to the trash, {gc_last['skipped']} skipped, "
        f"{gc_last['purged']} purged — `{gc_last['report']}`"
        if gc_last
        else "- Last gc: none applied yet"
    )
    md.append(
        f"- Last compaction: {_day(cp_last['applied_at'])}, {plural(cp_last['files'], 'file')}, "
        f"{human_size(cp_last['bytes_before'])} -> {human_size(cp_last['bytes_after'])} — "
        f"`{cp_last['report']}`"
        if cp_last
        else "- Last compaction: none applied yet"
    )
    tr = data["trash"]
    md += [
        "",
        "## Trash",
        "",
        f"{plural(len(tr['items']), 'folder')}, {human_size(tr['size'])}; each is purged "
        f"{tr['retention_days']} days after it was trashed.",
    ]
    if tr["items"]:
        md += [
            "",
            "| Folder | Run | Family | Trashed | Expires | Size |",
            "|---|---|---|---|---|---:|",
        ]
        md += [
            f"| {i['trash_id']} | {i['id']} | {i['family'] or '?'} | {_day(i['trashed_at'])} | "
            f"{_day(i['expires_at'])} | {human_size(i['size'])} |"
            for i in tr["items"]
        ]
    doomed = [r for r in data["runs"] if not r["keep"]]
    md += ["", "## What the next `gc --apply` would delete", ""]
    if doomed:
        md += ["| ID | Family | Timestamp | Size | Why |", "|---|---|---|---:|---|"]
        md += [
            f"| {r['id']} | {r['family']} | {_day(r['timestamp'], full=True)} | "
            f"{human_size(r['size'])} | {'; '.join(r['reasons']).replace('|', '/')} |"
            for r in doomed
        ]
    else:
        md.append("Nothing.")
    return "\n".join(md) + "\n"


def _day(stamp: str | None, *, full: bool = False) -> str:
    if not stamp:
        return "?"
    return stamp.replace("T", " ").rstrip("Z") if full else stamp[:10]


# ---- HTML with inline SVG ----------------------------------------------------------------

COLOURS = {"pass": "#2e8540", "fail": "#c62828", "other": "#8a8a8a"}
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


def to_html(data: dict[str, Any]) -> str:
    e = html.escape
    t = data["totals"]
    rows = "".join(
        f"<tr><td>{e(f['family'])}</td><td>{f['runs']}</td><td>{f['pass']}</td>"
        f"<td>{f['fail']}</td><td>{f['other']}</td><td>{human_size(f['size'])}</td>"
        f"<td>{_day(f['oldest'])}</td><td>{_day(f['newest'])}</td><td>{f['pinned']}</td>"
        f"<td>{f['reclaimable_runs']} ({human_size(f['reclaimable_bytes'])})</td></tr>"
        for f in data["families"]
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Artifacts report {e(data["generated_at"])}</title>
<style>
body {{ font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px;
       color: #1d1d1d; max-width: 1000px; }}
h1 {{ font-size: 22px; margin: 0 0 4px; }} h2 {{ font-size: 17px; margin: 28px 0 8px; }}
.sub {{ color: #555; margin-bottom: 16px; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ border-bottom: 1px solid #e3e3e3; padding: 4px 8px; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
th {{ background: #f5f5f5; font-weight: 600; }}
svg {{ display: block; margin: 6px 0 0; }}
svg text {{ font: 12px system-ui, sans-serif; fill: #333; }}
.cards {{ display: flex; gap: 12px; flex-wrap: wrap; }}
.card {{ background: #f6f8fa; border-radius: 6px; padding: 10px 14px; min-width: 150px; }}
.card b {{ display: block; font-size: 20px; }}
table.left th, table.left td {{ text-align: left; }}
</style></head><body>
<h1>Artifacts report</h1>
<div class="sub">{e(data["root"])} — generated {e(_day(data["generated_at"], full=True))} UTC</div>
<div class="cards">
<div class="card"><b>{t["runs"]}</b>runs</div>
<div class="card"><b>{human_size(t["size"])}</b>on disk, {t["files"]} files</div>
<div class="card"><b>{human_size(t["reclaimable_bytes"])}</b>reclaimable
({t["reclaimable_runs"]} runs)</div>
<div class="card"><b>{human_size(data["trash"]["size"])}</b>in the trash
({len(data["trash"]["items"])} folders)</div>
</div>
<h2>Disk use by family</h2>
{_disk_chart(data)}
<h2>Runs over time</h2>
{_runs_chart(data)}
<h2>Trash by expiry date</h2>
{_trash_chart(data)}
<h2>Families</h2>
<table><tr><th>Family</th><th>Runs</th><th>Pass</th><th>Fail</th><th>Other</th><th>Size</th>
<th>Oldest</th><th>Newest</th><th>Pinned</th><th>Reclaimable</th></tr>{rows}</table>
<h2>What the next gc --apply would delete</h2>
{_doomed_table(data)}
<h2>Trash</h2>
{_trash_table(data)}
<h2>Last operations</h2>
<p>{e(_last_line(data))}</p>
</body></html>
"""


def _doomed_table(data: dict[str, Any]) -> str:
    e = html.escape
    doomed = [r for r in data["runs"] if not r["keep"]]
    if not doomed:
        return "<p>Nothing.</p>"
    rows = "".join(
        f"<tr><td>{e(r['id'])}</td><td>{e(r['family'])}</td>"
        f"<td>{e(_day(r['timestamp'], full=True))}</td><td>{human_size(r['size'])}</td>"
        f'<td style="text-align:left">{e("; ".join(r["reasons"]))}</td></tr>'
        for r in doomed
    )
    return (
        '<table class="left"><tr><th>ID</th><th>Family</th><th>Timestamp</th><th>Size</th>'
        f'<th style="text-align:left">Why</th></tr>{rows}</table>'
    )


def _trash_table(data: dict[str, Any]) -> str:
    e = html.escape
    tr = data["trash"]
    if not tr["items"]:
        return "<p>The trash is empty.</p>"
    rows = "".join(
        f"<tr><td>{e(i['trash_id'])}</td><td>{e(i['id'])}</td><td>{e(i['family'] or '?')}</td>"
        f"<td>{e(_day(i['trashed_at']))}</td><td>{e(_day(i['expires_at']))}</td>"
        f"<td>{human_size(i['size'])}</td></tr>"
        for i in tr["items"]
    )
    return (
        f"<p>{len(tr['items'])} folders, {human_size(tr['size'])}; each is purged "
        f"{tr['retention_days']} days after it was trashed.</p>"
        '<table class="left"><tr><th>Folder</th><th>Run</th><th>Family</th><th>Trashed</th>'
        f"<th>Expires</th><th>Size</th></tr>{rows}</table>"
    )


def _last_line(data: dict[str, Any]) -> str:
    parts = []
    g, c = data["last_gc"], data["last_compaction"]
    parts.append(
        f"Last gc {_day(g['applied_at'])}: {g['moved_runs']} runs "
        f"({human_size(g['moved_bytes'])}) to the trash."
        if g
        else "No gc applied yet."
    )
    parts.append(
        f"Last compaction {_day(c['applied_at'])}: {c['files']} files, "
        f"{human_size(c['bytes_before'])} → {human_size(c['bytes_after'])}."
        if c
        else "No compaction applied yet."
    )
    return " ".join(parts)


def _label_width(names: list[str]) -> int:
    """Room for the family names before a chart (about 7 px a character, within bounds)."""
    return min(260, max(110, 7 * max((len(n) for n in names), default=0) + 12))


def _family_label(name: str, x: int, y: int) -> str:
    """A family's name, shortened with … when longer than the label room (full on hover)."""
    shown = name if len(name) <= 36 else name[:35] + "…"
    return f'<text x="{x}" y="{y}"><title>{html.escape(name)}</title>{html.escape(shown)}</text>'


def _ticks(first: datetime, last: datetime) -> list[tuple[datetime, str]]:
    """Axis ticks at real dates: midnights when the runs span four days or more (a label
    sits where its day begins), else evenly spaced times labelled to the minute."""
    days = (last - first).total_seconds() / 86400
    if days >= 4:
        step = timedelta(days=max(1, -(-int(days) // 5)))
        t = first.replace(hour=0, minute=0, second=0) + timedelta(days=1)
        ticks = []
        while t <= last:
            ticks.append((t, shown_time(t)[:10]))
            t += step
        return ticks
    if last == first:
        return [(first, shown_time(first)[:16])]
    span = last - first
    return [(first + span * k / 4, shown_time(first + span * k / 4)[5:16]) for k in range(5)]


def _disk_chart(data: dict[str, Any]) -> str:
    fams = data["families"]
    if not fams:
        return "<p>No runs.</p>"
    width, bar_h = 900, 22
    label = _label_width([f["family"] for f in fams])
    top = max(f["size"] for f in fams) or 1
    out = [
        f'<svg width="{width}" height="{len(fams) * (bar_h + 8) + 10}" role="img" '
        'aria-label="Disk use by family">'
    ]
    for i, f in enumerate(fams):
        y = i * (bar_h + 8) + 4
        kept = f["size"] - f["reclaimable_bytes"]
        scale = (width - label - 230) / top  # room for the size label after the bar
        w_kept, w_doomed = kept * scale, f["reclaimable_bytes"] * scale
        colour = PALETTE[i % len(PALETTE)]
        out.append(_family_label(f["family"], 0, y + 15))
        out.append(
            f'<rect x="{label}" y="{y}" width="{w_kept:.1f}" height="{bar_h}" '
            f'fill="{colour}"><title>kept: {human_size(kept)}</title></rect>'
        )
        out.append(
            f'<rect x="{label + w_kept:.1f}" y="{y}" width="{w_doomed:.1f}" '
            f'height="{bar_h}" fill="{colour}" fill-opacity="0.3" stroke="{colour}" '
            f'stroke-dasharray="3,2"><title>reclaimable: '
            f"{human_size(f['reclaimable_bytes'])}</title></rect>"
        )
        out.append(
            f'<text x="{label + w_kept + w_doomed + 6:.1f}" y="{y + 15}">'
            f"{human_size(f['size'])}"
            + (
                f" ({human_size(f['reclaimable_bytes'])} reclaimable)"
                if f["reclaimable_bytes"]
                else ""
            )
            + "</text>"
        )
    out.append("</svg>")
    return "\n".join(out)


def _runs_chart(data: dict[str, Any]) -> str:
    runs = data["runs"]
    if not runs:
        return "<p>No runs.</p>"
    fams = [f["family"] for f in data["families"]]
    times = [parse_iso(r["timestamp"]) for r in runs]
    first, last = min(times), max(times)
    span = (last - first).total_seconds() or 1.0
    width, row_h, top_pad = 900, 30, 10
    label = _label_width(fams) + 10  # a dot at the very start stays clear of the name
    plot_w = width - label - 20
    height = len(fams) * row_h + top_pad + 50
    out = [f'<svg width="{width}" height="{height}" role="img" aria-label="Runs over time">']
    for i, name in enumerate(fams):
        y = top_pad + i * row_h + row_h / 2
        out.append(_family_label(name, 0, round(y + 4)))
        out.append(
            f'<line x1="{label}" x2="{width - 10}" y1="{y:.0f}" y2="{y:.0f}" stroke="#eee"/>'
        )
    for r, when in zip(runs, times, strict=True):
        if r["family"] not in fams:
            continue
        x = label + (when - first).total_seconds() / span * plot_w
        y = top_pad + fams.index(r["family"]) * row_h + row_h / 2
        colour = COLOURS.get(r["status"], COLOURS["other"])
        fill = colour if r["keep"] else "white"
        tip = html.escape(f"{r['id']} {r['timestamp']} {r['status']}: {'; '.join(r['reasons'])}")
        out.append(
            f'<circle cx="{x:.1f}" cy="{y:.0f}" r="5" fill="{fill}" stroke="{colour}" '
            f'stroke-width="1.5"><title>{tip}</title></circle>'
        )
    axis_y = top_pad + len(fams) * row_h + 14
    for when, text in _ticks(first, last):
        x = label + (when - first).total_seconds() / span * plot_w
        anchor = "start" if x < label + 40 else "end" if x > width - 60 else "middle"
        out.append(f'<text x="{x:.0f}" y="{axis_y}" text-anchor="{anchor}">{text}</text>')
        out.append(
            f'<line x1="{x:.0f}" x2="{x:.0f}" y1="{top_pad}" y2="{axis_y - 12}" stroke="#f0f0f0"/>'
        )
    legend_y = axis_y + 22
    legend = [
        ("pass", True, "pass, kept"),
        ("fail", True, "fail, kept"),
        ("other", True, "unknown, kept"),
        ("pass", False, "deleted by the next gc"),
    ]
    x = label
    for status, kept, text in legend:
        colour = COLOURS[status]
        out.append(
            f'<circle cx="{x + 5}" cy="{legend_y - 4}" r="5" '
            f'fill="{colour if kept else "white"}" stroke="{colour}" stroke-width="1.5"/>'
        )
        out.append(f'<text x="{x + 14}" y="{legend_y}">{text}</text>')
        x += 150
    out.append("</svg>")
    return "\n".join(out)


def _trash_chart(data: dict[str, Any]) -> str:
    """Bytes expiring each day, on a day-by-day axis from today to the last expiry."""
    items = [i for i in data["trash"]["items"] if i["expires_at"]]
    if not items:
        return "<p>The trash is empty.</p>"
    today = parse_iso(data["generated_at"]).date()
    by_day: dict[str, int] = {}
    for i in items:  # overdue folders (expired, not purged yet) go with today's
        day = max(parse_iso(i["expires_at"]).date(), today).isoformat()
        by_day[day] = by_day.get(day, 0) + i["size"]
    last = max(parse_iso(i["expires_at"]).date() for i in items)
    first = today
    days = [(first + timedelta(days=k)).isoformat() for k in range((last - first).days + 1)]
    width, height, bottom, left = 900, 180, 34, 10
    top = max(by_day.values()) or 1
    slot = (width - 2 * left) / len(days)
    every = max(1, round(len(days) / 10))
    out = [
        f'<svg width="{width}" height="{height + bottom}" role="img" '
        'aria-label="Trash by expiry date">',
        f'<line x1="{left}" x2="{width - left}" y1="{height}" y2="{height}" stroke="#999"/>',
    ]
    for k, day in enumerate(days):
        x = left + k * slot
        size = by_day.get(day, 0)
        if size:
            h = max(2.0, size / top * (height - 24))
            out.append(
                f'<rect x="{x + slot * 0.15:.1f}" y="{height - h:.1f}" '
                f'width="{slot * 0.7:.1f}" height="{h:.1f}" fill="#6a5acd">'
                f"<title>{day}: {human_size(size)} purged</title></rect>"
            )
            if slot >= 44:  # room for the figure over the bar; else it is in the tooltip
                out.append(
                    f'<text x="{x + slot / 2:.1f}" y="{height - h - 4:.1f}" '
                    f'text-anchor="middle">{human_size(size)}</text>'
                )
        if k % every == 0 or k == len(days) - 1:
            out.append(
                f'<text x="{x + slot / 2:.1f}" y="{height + 16}" text-anchor="middle">'
                f"{day[5:]}</text>"
            )
    out.append(
        f'<text x="{left}" y="{height + 31}">purged on that day (UTC), '
        f"{data['trash']['retention_days']} days after trashing; the tallest bar is "
        f"{human_size(top)}</text>"
    )
    out.append("</svg>")
    return "\n".join(out)
