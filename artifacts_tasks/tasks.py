"""doit task creators, thin over the same library functions as the CLI.

`from artifacts_tasks.tasks import *` in a dodo.py gives scan, pin, gc, gc_apply, compact,
compact_apply and report on ./artifacts with ./config/artifacts.yaml (or $ARTIFACTS_ROOT /
$ARTIFACTS_CONFIG). For another root, config, or to run after the project's own tasks, use
the factory:

    globals().update(make_tasks(root="out/artifacts", after=["verify"]))

The library never sets DOIT_CONFIG: the importing project owns its doit settings.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import xxhash

from .config import DEFAULT_CONFIG_PATH, Family, load_config

__all__ = [
    "make_tasks",
    "task_compact",
    "task_compact_apply",
    "task_gc",
    "task_gc_apply",
    "task_pin",
    "task_report",
    "task_scan",
]

TaskCreator = Callable[[], dict[str, Any]]
_SIG_KEY = "artifacts_tree_signature"
_CONTENT_KEY = "artifacts_manifest_content"


def _paths(
    root: str | os.PathLike[str] | None, config: str | os.PathLike[str] | None
) -> tuple[Path, Path | None]:
    """The root and config to use: arguments, else the environment, else the defaults."""
    root = root or os.environ.get("ARTIFACTS_ROOT") or "artifacts"
    config = config or os.environ.get("ARTIFACTS_CONFIG") or None
    return Path(root), (Path(config) if config else None)


class TreeSignature:
    """doit `uptodate`: the task is up to date while no artifact file, pin or config changed.

    Directories cannot be doit file_deps, so this walks the tree as a scan does, stats every
    file in the directories the families match (name, size, mtime_ns, inode), and compares
    that digest, the config's bytes and the pins and manifest files' stats with what was
    saved after the last successful run. Any error means "not up to date": a check must
    never break the build.
    """

    def __init__(self, root: Path, config_path: Path | None) -> None:
        self.root = root
        self.config_path = config_path
        self.current: dict[str, str] | None = None

    def configure_task(self, task: Any) -> None:
        task.value_savers.append(self._saved_value)

    def __call__(self, task: Any, values: dict[str, Any]) -> bool:
        self.current = None
        saved = values.get(_SIG_KEY)
        try:
            config_hash = self._config_hash()
            if isinstance(saved, dict) and saved.get("config") == config_hash:
                # Same config bytes: reuse the families saved with them, so the common case
                # needs neither YAML nor schema validation.
                families = [[str(n), list(p), rp] for n, p, rp in saved["families"]]
            else:
                config = load_config(self.config_path)  # validated: a bad one fails the scan
                families = [[f.name, list(f.patterns), f.run_pattern] for f in config.families]
            self.current = self._signature(config_hash, families)
        except Exception:
            return False
        return bool(saved == self.current)

    def _saved_value(self) -> dict[str, Any]:
        """After a successful run: the tree as checked before it, the manifest as written now."""
        from .manifest import read_header

        header = read_header(self.root)
        if self.current is None or header is None or not header.tree_signature:
            return {}  # the scan could not read everything: try again next time
        sig = dict(self.current)
        sig["manifest"] = _stat_key(self.root / ".manifest.json")
        return {_SIG_KEY: sig}

    def _config_hash(self) -> str:
        return _file_hash(self.config_path or DEFAULT_CONFIG_PATH)

    def _signature(self, config_hash: str, families: list[list[Any]]) -> dict[str, Any]:
        from .families import Classifier
        from .scan import walk

        classifier = Classifier([Family(n, tuple(p), rp) for n, p, rp in families])
        tree = walk(self.root, classifier, 0, collect=False)
        return {
            "root": str(self.root),  # as configured: a cache may land at another path
            "config": config_hash,
            "families": families,
            "tree": tree.digest,
            "pins": _stat_key(self.root / ".pins.json"),
            "manifest": _stat_key(self.root / ".manifest.json"),
            # An interrupted apply's journal: the scan must run, and recover it.
            "journal": _stat_key(self.root / ".journal.json"),
        }


class ManifestContent:
    """doit `uptodate` for tasks that read the runs (gc): up to date while the config's
    bytes and what the manifest says about the runs are unchanged — not its mtimes or
    inodes, so a tree restored from a CI cache keeps them up to date."""

    def __init__(self, root: Path, config_path: Path | None, *, trash: bool = False) -> None:
        self.root = root
        self.config_path = config_path
        self.trash = trash  # the report also shows the trash: its folders and reports count
        self.current: dict[str, str] | None = None

    def configure_task(self, task: Any) -> None:
        task.value_savers.append(lambda: {_CONTENT_KEY: self.current} if self.current else {})

    def __call__(self, task: Any, values: dict[str, Any]) -> bool:
        from .manifest import read_header

        self.current = None
        try:
            header = read_header(self.root)
            if header is None:
                return False
            self.current = {
                "root": str(self.root),  # as configured: a cache may land at another path
                "config": _file_hash(self.config_path or DEFAULT_CONFIG_PATH),
                "content": header.content_digest,
            }
            if self.trash:
                self.current["trash"] = _trash_names(self.root)
        except Exception:
            return False
        return bool(values.get(_CONTENT_KEY) == self.current)


def _trash_names(root: Path) -> str:
    """xxh3 of the trash's entries (folders, reports): a gc, purge or restore changes it."""
    folder = root / ".trash"
    if folder.is_symlink() or not folder.is_dir():
        return "absent"
    names = sorted(os.listdir(folder))
    return str(xxhash.xxh3_128_hexdigest("\0".join(names).encode("utf-8", "surrogateescape")))


def _file_hash(path: Path) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        data = b"<absent>"
    return str(xxhash.xxh3_128_hexdigest(data))


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
            if not params.get("id") and not params.get("on") and not params.get("off"):
                # A bare `doit` in a project without default_tasks runs every task.
                print("pin: nothing to pin (use: doit pin --id ID --on, or --off)")
                return True
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
    """doit task creators (scan, pin, gc, gc_apply, compact, compact_apply, report) bound to
    a root and config.

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

    def task_gc() -> dict[str, Any]:
        """Show the retention plan: what gc would delete and why (a dry run)."""
        return {
            "actions": [_cli_action(["gc", *common])],
            "task_dep": ["scan"],
            "uptodate": [ManifestContent(root_path, config_path)],
            "verbosity": 2,
        }

    def task_gc_apply() -> dict[str, Any]:
        """Apply the retention plan: move the runs it deletes to the trash.

        No questions: running the task is the confirmation. Config and manifest are checked
        against their schemas before anything moves.
        """
        return {
            "actions": [_cli_action(["gc", "--apply", "--force", *common])],
            "task_dep": list(after),
            "verbosity": 2,
        }

    def task_report() -> dict[str, Any]:
        """Write the report (md, json, html) under the root's .reports/."""
        return {
            "actions": [_cli_action(["report", *common])],
            "task_dep": ["scan"],
            "targets": [
                str(root_path / ".reports" / f"report.{f}") for f in ("md", "json", "html")
            ],
            "uptodate": [ManifestContent(root_path, config_path, trash=True)],
            "verbosity": 2,
        }

    def task_compact() -> dict[str, Any]:
        """Show the compaction plan: what would be compacted, how small, what is left alone."""
        return {
            "actions": [_cli_action(["compact", *common])],
            "task_dep": ["scan"],
            "uptodate": [ManifestContent(root_path, config_path)],
            "verbosity": 2,
        }

    def task_compact_apply() -> dict[str, Any]:
        """Compact big JSONL (lossless) and Markdown files (originals to the trash).

        Files already compacted cost nothing: the manifest says so without reading them.
        """
        return {
            "actions": [_cli_action(["compact", "--apply", *common])],
            "task_dep": list(after),
            "verbosity": 2,
        }

    return {
        "task_scan": task_scan,
        "task_pin": task_pin,
        "task_gc": task_gc,
        "task_gc_apply": task_gc_apply,
        "task_compact": task_compact,
        "task_compact_apply": task_compact_apply,
        "task_report": task_report,
    }


_defaults = make_tasks()
task_scan = _defaults["task_scan"]
task_pin = _defaults["task_pin"]
task_gc = _defaults["task_gc"]
task_gc_apply = _defaults["task_gc_apply"]
task_compact = _defaults["task_compact"]
task_compact_apply = _defaults["task_compact_apply"]
task_report = _defaults["task_report"]
