"""Configuration: YAML, loaded safely -> schema validation -> frozen dataclasses."""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from .errors import ConfigError

DEFAULT_CONFIG_PATH = Path("config/artifacts.yaml")

# The built-in defaults: the mission's config. Everything a config file omits comes from here.
DEFAULT_FAMILIES: dict[str, tuple[str, ...]] = {
    "proofs": ("**/microstructure/proofs/*.jsonl", "**/microstructure/proofs/*.md"),
    "bench": ("**/bench/*.jsonl", "**/bench/*.md", "**/bench/p99_*.json"),
    "smoke90": ("**/smoke90/*.jsonl", "**/smoke90/*.md", "**/smoke90/backtest_*.json"),
    "explain": ("**/explain_delta/*.jsonl", "**/explain_delta/*.md"),
    "greenwall": ("**/greenwall/*.jsonl", "**/greenwall/*.md", "**/greenwall/verification_*.json"),
}
DEFAULT_KEEP = {"proofs": 10, "bench": 10, "smoke90": 8, "explain": 12, "greenwall": 12}
# A family added by the config without a retention entry keeps everything: nothing is
# deleted that nobody asked to delete.
NEW_FAMILY_KEEP = -1
# The safety rules, in the order the gc summary and `gc --json` name them. They always
# hold; `gc.always_keep` in the config only documents them.
SAFETY_RULES = ("pinned", "last_pass", "last_run")


@dataclass(frozen=True)
class Family:
    """A named set of glob patterns; `run_pattern` optionally names the run key."""

    name: str
    patterns: tuple[str, ...]
    run_pattern: str | None = None


@dataclass(frozen=True)
class Retention:
    """One family's retention rules (restic semantics for the bucket rules)."""

    keep: int = NEW_FAMILY_KEEP
    pin: tuple[str, ...] = ()
    keep_hourly: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0
    keep_within: str | None = None
    keep_within_hourly: str | None = None
    keep_within_daily: str | None = None
    keep_within_weekly: str | None = None
    keep_within_monthly: str | None = None
    keep_within_yearly: str | None = None


@dataclass(frozen=True)
class JsonlCompaction:
    enabled: bool = True
    min_size_kb: int = 100
    dict_threshold: int = 5
    zstd_level: int = 19


@dataclass(frozen=True)
class MarkdownCompaction:
    enabled: bool = True
    min_size_kb: int = 50
    remove_empty_sections: bool = True
    canonical_headers: bool = True


@dataclass(frozen=True)
class Indexing:
    parallel_workers: int = 8
    checksum_buffer_size_kb: int = 128
    max_files_per_scan: int = 50000


@dataclass(frozen=True)
class Config:
    """The whole validated configuration."""

    path: str
    families: tuple[Family, ...]
    retention: Mapping[str, Retention]
    always_keep: tuple[str, ...] = SAFETY_RULES
    jsonl: JsonlCompaction = field(default_factory=JsonlCompaction)
    markdown: MarkdownCompaction = field(default_factory=MarkdownCompaction)
    indexing: Indexing = field(default_factory=Indexing)
    trash_retention_days: int = 30

    def family_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.families)

    def families_digest(self) -> str:
        """xxh3-128 of the family definitions: a manifest grouped by others is regrouped."""
        import xxhash

        spec = [[f.name, list(f.patterns), f.run_pattern] for f in self.families]
        return str(xxhash.xxh3_128_hexdigest(json.dumps(spec).encode()))

    def config_pins(self) -> dict[str, str]:
        """Entry id -> family, for the pins that live in the config."""
        return {pin: name for name, r in self.retention.items() for pin in r.pin}


def default_config() -> Config:
    """The built-in configuration (the mission's), used when no config file exists."""
    return _build({}, "<built-in defaults>")


def load_config(path: Path | None = None) -> Config:
    """Load, validate and build the config; defaults when the default path is absent.

    An explicitly named file that does not exist is an error (a typo must not silently
    fall back to defaults).
    """
    explicit = path is not None
    path = path if path is not None else DEFAULT_CONFIG_PATH
    shown = str(path)
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        if explicit:
            raise ConfigError(
                shown, "", "no such file (omit --config to use the defaults)"
            ) from None
        return default_config()
    except OSError as exc:
        raise ConfigError(shown, "", f"cannot read: {exc.strerror}") from None
    data = parse_yaml(text, shown)
    return build_config(data, shown)


def parse_yaml(text: bytes, shown: str) -> dict[str, Any]:
    """Parse YAML safely: tags never construct objects, duplicate keys are errors."""
    import yaml  # imported on use: doit's up-to-date check never parses YAML

    try:
        try:
            data = yaml.load(text, Loader=_strict_loader(fast=True))
        except yaml.YAMLError:
            # libyaml's messages leave out the character at fault ("found character that
            # cannot start any token"): parse the broken file again in Python for the
            # user's sake; it raises the same error, in better words.
            data = yaml.load(text, Loader=_strict_loader(fast=False))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = (exc.problem or str(exc)).strip()
        raise ConfigError(shown, "", f"invalid YAML: {where}{problem}") from None
    except yaml.reader.ReaderError as exc:
        if exc.encoding == "unicode":  # decoded fine, but holds a control character
            raise ConfigError(
                shown,
                "",
                f"invalid YAML: character {exc.character:#04x} at character {exc.position} "
                "is not allowed (a control character); remove it",
            ) from None
        raise ConfigError(
            shown, "", f"not UTF-8 text: {exc.reason} at byte {exc.position}; save it as UTF-8"
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(shown, "", "invalid YAML: " + " ".join(str(exc).split())) from None
    except RecursionError:
        raise ConfigError(
            shown, "", f"invalid YAML: nested more than {MAX_CONFIG_DEPTH} levels deep"
        ) from None
    except TypeError as exc:  # `? [a, b]: 1`: a list or a mapping as a key
        raise ConfigError(shown, "", f"invalid YAML: a key must be a plain value ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(shown, "", f"the top level must be a mapping, not {_kind(data)}")
    try:
        values, depth = _measure(data)
    except RecursionError:
        values, depth = 0, MAX_CONFIG_DEPTH + 1
    if depth > MAX_CONFIG_DEPTH:
        raise ConfigError(
            shown, "", f"invalid YAML: nested more than {MAX_CONFIG_DEPTH} levels deep"
        )
    if values > MAX_CONFIG_VALUES:
        raise ConfigError(
            shown,
            "",
            f"its aliases expand to more than {MAX_CONFIG_VALUES:,} values (a YAML bomb?); "
            "write the values out or use fewer nested aliases",
        )
    return data


MAX_CONFIG_VALUES = 100_000
MAX_CONFIG_DEPTH = 32  # the schema needs 5; a validator recursing 400 deep gives up


def _measure(data: Any) -> tuple[int, int]:
    """How many values `data` holds once every alias is expanded, and how deeply its lists
    and mappings nest, without expanding anything: an alias is one shared object, measured
    once and its figures reused, and counting stops past the limit, so a billion laughs
    costs microseconds, not gigabytes."""
    known: dict[int, tuple[int, int]] = {}

    def measure(value: Any) -> tuple[int, int]:
        if not isinstance(value, dict | list):
            return 1, 0
        if id(value) in known:
            return known[id(value)]
        known[id(value)] = MAX_CONFIG_VALUES + 1, 0  # a cycle (impossible in safe YAML)
        items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
        total, deepest = 1, 0
        for item in items:
            size, depth = measure(item)
            total, deepest = total + size, max(deepest, depth)
            if total > MAX_CONFIG_VALUES or deepest > MAX_CONFIG_DEPTH:
                break
        known[id(value)] = total, deepest + 1
        return known[id(value)]

    return measure(data)


def build_config(data: dict[str, Any], shown: str) -> Config:
    """Validate a parsed config against the schema and build the dataclasses."""
    _validate(data, shown)
    return _build(data, shown)


@cache
def _strict_loader(*, fast: bool) -> Any:
    """A SafeLoader that rejects duplicate keys instead of silently keeping the last;
    `fast`: on libyaml's C parser when PyYAML has it (1 ms where Python's takes 20)."""
    import yaml

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader) if fast else yaml.SafeLoader

    class StrictLoader(base):  # type: ignore[misc,valid-type]
        pass

    def construct_mapping(loader: StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
        loader.flatten_mapping(node)
        seen: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen[key] = loader.construct_object(value_node, deep=True)
        return seen

    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    return StrictLoader


@cache
def load_schema(name: str) -> dict[str, Any]:
    """A JSON schema shipped in the package (`schemas/` at the repository top)."""
    text = (Path(__file__).parent / "schemas" / name).read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def schema_error(schema_name: str, data: Any) -> tuple[str, str] | None:
    """The first schema violation as (key path, problem), or None when valid."""
    import jsonschema_rs  # imported on use (30 ms): doit's up-to-date check never needs it

    error = next(iter(_validator(schema_name).iter_errors(data)), None)
    if error is None:
        return None
    path = ".".join(str(p) for p in error.instance_path)
    kind = error.kind
    if isinstance(kind, jsonschema_rs.ValidationErrorKind.AdditionalProperties):
        node = _schema_node(load_schema(schema_name), list(error.schema_path)[:-1])
        allowed = sorted(node.get("properties", {}))
        key = str(kind.unexpected[0])
        close = difflib.get_close_matches(key, allowed, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        where = f"{path}.{key}" if path else key
        return where, f"unknown key{hint} (allowed: {', '.join(allowed)})"
    if isinstance(kind, jsonschema_rs.ValidationErrorKind.Pattern):
        return path, f"{error.instance!r} is not in the expected form"
    return path, str(error.message)


@cache
def _validator(schema_name: str) -> Any:
    import jsonschema_rs

    return jsonschema_rs.validator_for(load_schema(schema_name))


def _schema_node(schema: dict[str, Any], schema_path: list[Any]) -> dict[str, Any]:
    """Follow a validator's schema path (through $refs) to the sub-schema it names."""
    node: Any = schema
    for part in schema_path:
        node = node[part] if isinstance(node, dict) and part in node else node
    while isinstance(node, dict) and "$ref" in node and "properties" not in node:
        ref = str(node["$ref"]).removeprefix("#/").split("/")
        node = _schema_node(schema, ref)
    return node if isinstance(node, dict) else {}


def _validate(data: dict[str, Any], shown: str) -> None:
    found = schema_error("config.schema.json", data)
    if found is not None:
        path, problem = found
        if path.startswith("retention.") and ".pin." in path:
            problem += " (an entry id is 8 or more lowercase hex digits)"
        elif "keep_within" in path:
            problem += " (a duration such as 7d, 12h or 1y2m3d3h)"
        raise ConfigError(shown, path, problem)


def _kind(value: Any) -> str:
    return {list: "a list", str: "a string", int: "a number", float: "a number"}.get(
        type(value), type(value).__name__
    )


def _build(data: dict[str, Any], shown: str) -> Config:
    families = _build_families(data.get("families") or {}, shown)
    names = [f.name for f in families]
    retention_data: dict[str, Any] = data.get("retention") or {}
    for name in retention_data:
        if name not in names:
            raise ConfigError(
                shown,
                f"retention.{name}",
                f"unknown family {name!r} (families: {', '.join(names)})",
            )
    retention: dict[str, Retention] = {}
    for name in names:
        given = dict(retention_data.get(name) or {})
        if "pin" in given:
            given["pin"] = tuple(given["pin"])
        base = {"keep": DEFAULT_KEEP.get(name, NEW_FAMILY_KEEP)}
        retention[name] = Retention(**{**base, **given})
    compaction = data.get("compaction") or {}
    return Config(
        path=shown,
        families=tuple(families),
        retention=retention,
        always_keep=tuple((data.get("gc") or {}).get("always_keep", SAFETY_RULES)),
        jsonl=_dataclass_from(JsonlCompaction, compaction.get("jsonl")),
        markdown=_dataclass_from(MarkdownCompaction, compaction.get("markdown")),
        indexing=_dataclass_from(Indexing, data.get("indexing")),
        trash_retention_days=int((data.get("trash") or {}).get("retention_days", 30)),
    )


def _dataclass_from(cls: Any, given: Mapping[str, Any] | None) -> Any:
    return cls(**(given or {}))  # the schema has refused unknown keys


def _build_families(given: Mapping[str, Any], shown: str) -> list[Family]:
    """The families in match order: those the config names, in its order, then the
    built-in ones it does not name. A named built-in keeps what the config leaves out."""
    builtin = {n: Family(n, p) for n, p in DEFAULT_FAMILIES.items()}
    merged: dict[str, Family] = {}
    disabled = set()
    for name, spec in given.items():
        spec = spec or {}
        if spec.get("enabled", True) is False:
            disabled.add(name)
            continue
        old = builtin.get(name)
        patterns = tuple(spec["patterns"]) if "patterns" in spec else None
        if patterns is None and old is None:
            raise ConfigError(shown, f"families.{name}", "a new family needs `patterns`")
        run_pattern = spec.get("run_pattern", old.run_pattern if old else None)
        if run_pattern is not None:
            _check_run_pattern(run_pattern, f"families.{name}.run_pattern", shown)
        for i, pattern in enumerate(patterns or ()):
            _check_glob(pattern, f"families.{name}.patterns.{i}", shown)
        merged[name] = Family(name, patterns or (old.patterns if old else ()), run_pattern)
    rest = [f for n, f in builtin.items() if n not in merged and n not in disabled]
    return [*merged.values(), *rest]


def _check_glob(pattern: str, key: str, shown: str) -> None:
    from .families import glob_to_regex

    try:
        re.compile(glob_to_regex(pattern))
    except re.error as exc:
        raise ConfigError(shown, key, f"{pattern!r} is not a valid pattern: {exc}") from None


def _check_run_pattern(pattern: str, key: str, shown: str) -> None:
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ConfigError(shown, key, f"not a valid regular expression: {exc}") from None
    if "run" not in compiled.groupindex:
        raise ConfigError(shown, key, "needs a named group `(?P<run>...)` holding the run key")
