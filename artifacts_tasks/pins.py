"""Pins set with the `pin` command, in `artifacts/.pins.json` (config pins stay in the config)."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from . import _fs
from .errors import ManifestError
from .manifest import Entry, iso

PINS_NAME = ".pins.json"
FIX = "fix or delete it (pins set with `pin` are lost then; config pins are not)"


def load_pins(root: Path) -> dict[str, dict[str, Any]]:
    """Entry id -> what was recorded when it was pinned; empty when nothing is pinned."""
    from .config import schema_error

    path = root / PINS_NAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ManifestError(str(path), f"cannot read: {exc.strerror}", hint=FIX) from None
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ManifestError(str(path), f"not valid JSON: {exc}", hint=FIX) from None
    found = schema_error("pins.schema.json", data)
    if found is not None:
        key, problem = found
        raise ManifestError(
            str(path), f"fails its schema at {key or 'the top level'}: {problem}", hint=FIX
        )
    pins: dict[str, dict[str, Any]] = data["pins"]
    return pins


def run_marker(family: str, directory: str, run_key: str) -> str:
    """How a pin names a run besides its id: ids can lengthen, the run's key cannot."""
    return f"{family}\x00{directory}\x00{run_key}"


def is_pinned(
    markers: Collection[str], entry_id: str, family: str, directory: str, run_key: str
) -> bool:
    """Whether pin markers (ids, and the runs pins recorded) name this run."""
    return entry_id in markers or run_marker(family, directory, run_key) in markers


def pin_markers(pins: Mapping[str, Mapping[str, Any]]) -> set[str]:
    """Everything that marks a run as pinned: the ids, and the runs recorded with them."""
    markers = set(pins)
    for pin in pins.values():
        if {"family", "directory", "run_key"} <= pin.keys():
            markers.add(run_marker(pin["family"], pin["directory"], pin["run_key"]))
    return markers


def _names(entry: Entry, pin_id: str, pin: Mapping[str, Any]) -> bool:
    return pin_id == entry.id or (pin.get("family"), pin.get("directory"), pin.get("run_key")) == (
        entry.family,
        entry.directory,
        entry.run_key,
    )


def set_pin(root: Path, entry: Entry, *, on: bool, now: datetime) -> bool:
    """Pin or unpin `entry` in the pins file; True when that changed anything."""
    pins = load_pins(root)
    mine = [pin_id for pin_id, pin in pins.items() if _names(entry, pin_id, pin)]
    if on == bool(mine):
        return False
    if on:
        pins[entry.id] = {
            "pinned_at": iso(now),
            "family": entry.family,
            "directory": entry.directory,
            "run_key": entry.run_key,
        }
    else:
        for pin_id in mine:
            del pins[pin_id]
    save_pins(root, pins)
    return True


def save_pins(root: Path, pins: Mapping[str, Any]) -> None:
    doc = {"format": "artifacts_tasks.pins", "version": 1, "pins": dict(sorted(pins.items()))}
    _fs.atomic_write(root / PINS_NAME, (json.dumps(doc, indent=1) + "\n").encode("ascii"))
