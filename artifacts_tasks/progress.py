"""Live progress on stderr for long operations, drawn by tqdm; silent when not on a terminal."""

from __future__ import annotations

import sys
from typing import Any, Protocol


class Progress(Protocol):
    """What a long operation reports: a start with totals, then advances."""

    def start(self, files: int, total_bytes: int) -> None: ...

    def advance(self, files: int, nbytes: int) -> None: ...

    def close(self) -> None: ...


class NoProgress:
    """Progress that shows nothing (not a terminal, or --no-progress)."""

    def start(self, files: int, total_bytes: int) -> None:
        pass

    def advance(self, files: int, nbytes: int) -> None:
        pass

    def close(self) -> None:
        pass


class BarProgress:
    """A byte-rate bar with a running file count, e.g. `scan 42%|██ | 1.2G/2.9G [12/30 files]`."""

    def __init__(self, desc: str, unit: str = "files") -> None:
        self.desc = desc
        self.unit = unit
        self.bar: Any = None
        self.files = 0
        self.total_files = 0

    def start(self, files: int, total_bytes: int) -> None:
        from tqdm import tqdm  # imported only when a bar is drawn: keeps start-up fast

        self.total_files = files
        if files:
            self.bar = tqdm(
                total=total_bytes,
                desc=self.desc,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                file=sys.stderr,
                leave=False,
                dynamic_ncols=True,
                mininterval=0.2,
                postfix=f"0/{files:,} {self.unit}",
            )

    def advance(self, files: int, nbytes: int) -> None:
        self.files += files
        if self.bar is not None:
            self.bar.set_postfix_str(
                f"{self.files:,}/{self.total_files:,} {self.unit}", refresh=False
            )
            self.bar.update(nbytes)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def make_progress(desc: str, *, enabled: bool, unit: str = "files") -> Progress:
    """A bar when enabled and stderr is a terminal, else nothing; `unit` names what is
    counted (files, or folders for a purge)."""
    if enabled and sys.stderr.isatty():
        return BarProgress(desc, unit)
    return NoProgress()
