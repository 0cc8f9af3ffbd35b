from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import harness


@pytest.fixture(scope="session", autouse=True)
def _figures() -> Iterator[None]:
    """Hand this process's counts to tools/reliability_figures.py when it asks for them."""
    yield
    harness.save_figures()


@pytest.fixture
def shm_path(tmp_path: Path) -> Iterator[Path]:
    """A directory in memory (/dev/shm) when there is one, else tmp_path: a SIGKILL keeps
    the page cache either way, and a sweep of hundreds of kills should not wait on fsync."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK | os.X_OK)):
        yield tmp_path
        return
    where = Path(tempfile.mkdtemp(prefix="artifacts-reliability-", dir=shm))
    try:
        yield where
    finally:
        shutil.rmtree(where, ignore_errors=True)
