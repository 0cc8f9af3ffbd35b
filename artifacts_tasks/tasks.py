"""doit task creators, thin over the same library functions as the CLI.

`from artifacts_tasks.tasks import *` in a dodo.py gives `scan` and `pin` on ./artifacts with
./config/artifacts.yaml (or $ARTIFACTS_ROOT / $ARTIFACTS_CONFIG). For another root, config, or
to run after the project's own tasks, use the factory:

    globals().update(make_tasks(root="out/artifacts", after=["verify"]))

The library never sets DOIT_CONFIG: the importing project owns its doit settings.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import xxhash

__all__ = ["make_tasks", "task_pin", "task_scan"]

TaskCreator = Callable[[], dict[str, Any]]
_SIG_KEY = "artifacts_tree_signature"


def _paths(
    root: str | os.PathLike[str] | None, config: str | os.PathLike[str] | None
) -> tuple[Path, Path | None]:
    """The root and config to use: arguments, else the environment, else the defaults."""
    root = root or os.environ.get("ARTIFACTS_ROOT") or "artifacts"
    config = config or os.environ.get("ARTIFACTS_CONFIG") or None
    return Path(root), (Path(config) if config else None)


class TreeSignature:
    """doit `uptodate`: the task is up to date while no artifact file, pin or config changed.

    Directories cannot be doit file_deps, so this stats every file the families match
    (path, size, mtime_ns, inode) and compares a digest with the one saved after the last
    successful run. Any error means "not up to date": a check must never break the build.
    """

    def __init__(self, root: Path, config_path: Path | None) -> None:
        self.root = root
        self.config_path = config_path
        self.current: dict[str, str] | None = None

    def configure_task(self, task: Any) -> None:
        task.value_savers.append(self._saved_value)

    def __call__(self, task: Any, values: dict[str, Any]) -> bool:
        try:
            self.current = self.signature()
        except Exception:
            self.current = None
            return False
        return values.get(_SIG_KEY) == self.current

    def _saved_value(self) -> dict[str, Any]:
        """After a successful run: the tree as it was checked, the manifest as written now."""
        try:
            sig = dict(self.current or self.signature())
            sig["manifest"] = _stat_key(self.root / ".manifest.json")
        except Exception:
            return {}
        return {_SIG_KEY: sig}

    def signature(self) -> dict[str, str]:
        from .config import DEFAULT_CONFIG_PATH, load_config
        from .families import Classifier

        config_path = self.config_path or DEFAULT_CONFIG_PATH
        try:
            config_bytes = config_path.read_bytes()
        except FileNotFoundError:
            config_bytes = b"<absent>"
        config = load_config(self.config_path)
        family_of = Classifier(config.families).family_of
        h = xxhash.xxh3_128()
        stack = [(str(self.root), "")]
        while stack:
            path, rel_dir = stack.pop()
            with os.scandir(path) as it:
                for de in it:
                    if de.name.startswith("."):
                        continue
                    rel = f"{rel_dir}/{de.name}" if rel_dir else de.name
                    if de.is_dir(follow_symlinks=False):
                        stack.append((de.path, rel))
                    elif family_of(rel) is not None:
                        st = de.stat(follow_symlinks=False)
                        h.update(
                            f"{rel}\0{st.st_mode}\0{st.st_size}\0{st.st_mtime_ns}\0"
                            f"{st.st_ino}\n".encode("utf-8", "surrogateescape")
                        )
        return {
            "root": str(self.root.resolve()),
            "tree": h.hexdigest(),
            "config": xxhash.xxh3_128_hexdigest(config_bytes),
            "pins": _stat_key(self.root / ".pins.json"),
            "manifest": _stat_key(self.root / ".manifest.json"),
        }


def _stat_key(path: Path) -> str:
    try:
        st = path.stat()
    except FileNotFoundError:
        return "absent"
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"


def _cli_action(argv: Sequence[str]) -> Callable[..., Any]:
    """A python-action running one CLI command; an expected error fails the task in one line."""

    def action(**params: Any) -> Any:
        from doit.exceptions import TaskFailed

        from .cli import main

        args = list(argv)
        if "id" in params:
            if not params.get("id") or params.get("on") == params.get("off"):
                return TaskFailed("pin needs --id ID and exactly one of --on / --off")
            args += ["--id", params["id"], "--on" if params["on"] else "--off"]
        code = main(args, prog="doit")
        return True if code == 0 else TaskFailed(f"{' '.join(argv[:1])} exited {code}")

    return action


def make_tasks(
    root: str | os.PathLike[str] | None = None,
    config: str | os.PathLike[str] | None = None,
    *,
    after: Sequence[str] = (),
) -> dict[str, TaskCreator]:
    """doit task creators (`task_scan`, `task_pin`) bound to a root and config.

    `after` names the project's own tasks that must run first (doit `task_dep`), so
    `doit scan` after a verification task needs no chaining on the command line.
    """
    root_path, config_path = _paths(root, config)
    common = ["--root", str(root_path)]
    if config_path is not None:
        common += ["--config", str(config_path)]

    def task_scan() -> dict[str, Any]:
        """Rescan the artifacts tree into its manifest (up to date while nothing changed)."""
        return {
            "actions": [_cli_action(["scan", *common])],
            "uptodate": [TreeSignature(root_path, config_path)],
            "task_dep": list(after),
            "verbosity": 2,
        }

    def task_pin() -> dict[str, Any]:
        """Pin a run so gc never deletes it: doit pin --id ID --on (or --off)."""
        return {
            "actions": [_cli_action(["pin", *common])],
            "params": [
                {
                    "name": "id",
                    "long": "id",
                    "type": str,
                    "default": "",
                    "help": "the run's id (see `cryptorun artifacts list`)",
                },
                {"name": "on", "long": "on", "type": bool, "default": False, "help": "pin it"},
                {"name": "off", "long": "off", "type": bool, "default": False, "help": "unpin it"},
            ],
            "uptodate": [False],
            "verbosity": 2,
        }

    return {"task_scan": task_scan, "task_pin": task_pin}


_defaults = make_tasks()
task_scan = _defaults["task_scan"]
task_pin = _defaults["task_pin"]
