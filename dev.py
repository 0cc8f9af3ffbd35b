#!/usr/bin/env python3
"""Set up and run the demo or the checks, with nothing but Python 3.11 installed.

python3 dev.py demo    # .venv + install, sample tree -> scan -> list -> pin -> gc -> doit scan x2
python3 dev.py check   # .venv + install, ruff, mypy --strict, pytest  (what CI runs)
python3 dev.py reliability   # the reliability suite, its figures into docs/reliability.md
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv"
BIN = VENV / "bin"
PY = BIN / "python"


def say(text: str) -> None:
    print(f"\n\033[1m$ {text}\033[0m" if sys.stdout.isatty() else f"\n$ {text}", flush=True)


def run(*argv: str | Path, cwd: Path = HERE, check: bool = True) -> int:
    code = subprocess.call([str(a) for a in argv], cwd=cwd)
    if check and code != 0:
        sys.exit(f"dev.py: `{' '.join(map(str, argv))}` failed with exit code {code}")
    return code


def setup() -> None:
    """Create .venv and install the package with its test extra (skipped when up to date)."""
    if sys.version_info < (3, 11):  # noqa: UP036 - say so clearly on an older Python
        sys.exit(f"dev.py: Python 3.11 or newer is needed, this is {sys.version.split()[0]}")
    stamp = VENV / ".installed"
    want = hashlib.sha256((HERE / "pyproject.toml").read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == want and PY.exists():
        return
    if not PY.exists():
        print("creating .venv ...", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    print("installing artifacts_tasks and its test tools into .venv ...", flush=True)
    run(PY, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-e", ".[test]")
    stamp.write_text(want)


def json_of(*argv: object) -> Any:
    """What a command prints with --json, parsed."""
    done = subprocess.run(
        [str(a) for a in argv], cwd=HERE, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)


def demo() -> None:
    """Write a sample tree to ./artifacts and walk through the main commands."""
    root = HERE / "artifacts"
    if root.exists():
        if not (root / ".demo").exists():
            sys.exit(f"dev.py: {root} exists and was not made by the demo; move it away first")
        shutil.rmtree(root)
    doit_db = HERE / ".doit.json"
    doit_db.unlink(missing_ok=True)
    cryptorun = BIN / "cryptorun"
    say("python -m artifacts_tasks.sample artifacts")
    run(PY, "-m", "artifacts_tasks.sample", root)
    (root / ".demo").write_text("made by `python3 dev.py demo`; rerunning the demo replaces it\n")
    say("cryptorun artifacts scan --verbose")
    run(cryptorun, "artifacts", "scan", "--verbose")
    say("cryptorun artifacts list")
    run(cryptorun, "artifacts", "list")
    oldest = json_of(cryptorun, "artifacts", "list", "--json", "--family", "bench")["entries"][-1][
        "id"
    ]
    say(f"cryptorun artifacts pin --id {oldest} --on")
    run(cryptorun, "artifacts", "pin", "--id", oldest, "--on")
    say("cryptorun artifacts list --family bench")
    run(cryptorun, "artifacts", "list", "--family", "bench")
    say("cryptorun artifacts gc --family bench   # the retention plan: nothing is deleted")
    run(cryptorun, "artifacts", "gc", "--family", "bench")
    doomed = json_of(cryptorun, "artifacts", "gc", "--json", "--family", "bench")["delete"][0]["id"]
    say(f"cryptorun artifacts explain --id {doomed}   # why, rule by rule")
    run(cryptorun, "artifacts", "explain", "--id", doomed)
    say("cryptorun artifacts gc --apply --force --family bench   # into the trash, undoable")
    run(cryptorun, "artifacts", "gc", "--apply", "--force", "--family", "bench")
    say(f"cryptorun artifacts restore --id {doomed}")
    run(cryptorun, "artifacts", "restore", "--id", doomed)
    say("cryptorun artifacts report   # Markdown, JSON and an HTML page with charts")
    run(cryptorun, "artifacts", "report")
    say("doit scan        # runs: doit has no record of this tree yet")
    run(BIN / "doit", "scan")
    say("doit scan        # up to date: nothing changed, doit prints `-- scan`")
    run(BIN / "doit", "scan")
    print(
        f"\nThe tree is in {root}; open {root / '.reports' / 'report.html'} in a browser. "
        "Try: .venv/bin/cryptorun artifacts trash list"
    )


def check() -> None:
    """Lint, types and tests: what CI runs."""
    env_bin = str(BIN)
    os.environ["PATH"] = env_bin + os.pathsep + os.environ.get("PATH", "")
    say("ruff check .")
    run(BIN / "ruff", "check", ".")
    say("ruff format --check .")
    run(BIN / "ruff", "format", "--check", ".")
    say("mypy --strict artifacts_tasks")
    run(BIN / "mypy", "--strict", "artifacts_tasks")
    say("pytest -n auto   # one worker per core")
    run(PY, "-m", "pytest", "-n", "auto", *sys.argv[2:])


def reliability() -> None:
    """The reliability suite, then its figures written into docs/reliability.md."""
    run(PY, HERE / "tools" / "reliability_figures.py")


def main() -> None:
    commands = {"demo": demo, "check": check, "reliability": reliability}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit("usage: python3 dev.py demo | check [pytest args] | reliability")
    setup()
    commands[sys.argv[1]]()


if __name__ == "__main__":
    main()
