"""Shared fixtures: build artifact trees, run the CLI in-process or as a real subprocess."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from artifacts_tasks import cli

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def write(
    root: Path, rel: str | bytes, content: str | bytes = "", *, mtime: datetime | None = None
) -> Path:
    """Write one file under root (parents created); `rel` may be bytes for non-UTF-8 names."""
    path = Path(os.fsdecode(os.path.join(os.fsencode(root), os.fsencode(rel))))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    if mtime is not None:
        ts = mtime.timestamp()
        os.utime(path, (ts, ts))
    return path


MakeTree = Callable[[Mapping[str, str | bytes]], Path]


@pytest.fixture
def make_tree(tmp_path: Path) -> MakeTree:
    """Factory: `make_tree({"bench/a_20250101_000000.md": "Status: PASS"})` -> the root."""

    def make(files: Mapping[str, str | bytes]) -> Path:
        root = tmp_path / "artifacts"
        root.mkdir(exist_ok=True)
        for rel, content in files.items():
            write(root, rel, content, mtime=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC))
        return root

    return make


@dataclass
class Result:
    code: int
    out: str
    err: str


def run_main(*argv: str | Path) -> Result:
    """`cli.main(argv)` in this process, capturing what it prints."""
    out, err = io.StringIO(), io.StringIO()
    code = cli.main([str(a) for a in argv], out=out, err=err)
    return Result(code, out.getvalue(), err.getvalue())


def run_console(
    *argv: str | Path, cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 60
) -> Result:
    """The installed `cryptorun` console script as a real subprocess."""
    proc = subprocess.run(
        [str(BIN / "cryptorun"), *map(str, argv)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)
