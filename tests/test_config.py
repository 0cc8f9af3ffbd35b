"""Config: defaults, partial configs, and one clear error line for every kind of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from artifacts_tasks.config import (
    DEFAULT_FAMILIES,
    ConfigError,
    default_config,
    load_config,
    load_schema,
)

from .conftest import REPO, run_main


def test_shipped_config_equals_builtin_defaults() -> None:
    shipped = load_config(REPO / "config" / "artifacts.yaml")
    builtin = default_config()
    assert shipped.families == builtin.families
    assert dict(shipped.retention) == dict(builtin.retention)
    assert (shipped.jsonl, shipped.markdown, shipped.indexing) == (
        builtin.jsonl,
        builtin.markdown,
        builtin.indexing,
    )
    assert builtin.retention["smoke90"].keep == 8
    assert builtin.retention["greenwall"].keep == 12


@pytest.mark.parametrize("name", ["config.schema.json", "manifest.schema.json", "pins.schema.json"])
def test_schemas_are_valid_draft_2020_12(name: str) -> None:
    schema = load_schema(name)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_missing_default_config_means_builtin_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_config(None).retention["bench"].keep == 10


def test_partial_config_keeps_other_defaults(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text("retention:\n  bench: {keep: 3}\n")
    config = load_config(path)
    assert config.retention["bench"].keep == 3
    assert config.retention["proofs"].keep == 10
    assert config.indexing.max_files_per_scan == 50000
    assert config.family_names() == tuple(DEFAULT_FAMILIES)


def test_families_merge_add_and_disable(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text(
        "families:\n"
        "  explain: {enabled: false}\n"
        "  logs: {patterns: ['logs/*.log'], run_pattern: '^(?P<run>\\w+)-'}\n"
        "  bench: {patterns: ['perf/*.md']}\n"
    )
    config = load_config(path)
    # Named families first, in the config's order; the built-ins it leaves out after them.
    assert config.family_names() == ("logs", "bench", "proofs", "smoke90", "greenwall")
    assert config.families[1].patterns == ("perf/*.md",)
    assert config.retention["logs"].keep == -1  # a new family deletes nothing by default


BAD = [
    # (file content, expected key path, words the message must contain)
    ("retention: [1\n", "", "invalid YAML: line 2"),
    ("- a\n- b\n", "", "top level must be a mapping"),
    ("retention:\n  bench: {keep: 3}\nretention: {}\n", "", "duplicate key 'retention'"),
    ("colour: blue\n", "colour", "unknown key"),
    ("retention:\n  bench: {kep: 3}\n", "retention.bench.kep", "did you mean 'keep'"),
    ("retention:\n  bench: {keep: ten}\n", "retention.bench.keep", "integer"),
    ("retention:\n  bench: {keep: -2}\n", "retention.bench.keep", "minimum of -1"),
    ("retention:\n  bench: {keep: true}\n", "retention.bench.keep", "integer"),
    ("retention:\n  nosuch: {keep: 3}\n", "retention.nosuch", "unknown family 'nosuch'"),
    ("retention:\n  bench: {pin: [XYZ]}\n", "retention.bench.pin.0", "hex digits"),
    ("retention:\n  bench: {keep_within: 7w}\n", "retention.bench.keep_within", "duration"),
    ("gc:\n  always_keep: [newest]\n", "gc.always_keep.0", "last_pass"),
    ("indexing:\n  parallel_workers: 0\n", "indexing.parallel_workers", "minimum of 1"),
    ("families:\n  x: {run_pattern: 'a'}\n", "families.x", "needs `patterns`"),
    (
        "families:\n  x: {patterns: ['a/*'], run_pattern: '(a'}\n",
        "families.x.run_pattern",
        "not a valid regular expression",
    ),
    (
        "families:\n  x: {patterns: ['a/*'], run_pattern: 'a'}\n",
        "families.x.run_pattern",
        "(?P<run>",
    ),
    ("families:\n  x: {patterns: ['/abs/*']}\n", "families.x.patterns.0", "expected form"),
    (
        "families:\n  x: {patterns: ['a/[z-a].md']}\n",
        "families.x.patterns.0",
        "not a valid pattern",
    ),
    ("!!python/object/apply:os.system ['touch PWNED']\n", "", "could not determine a constructor"),
    # the character at fault is named (libyaml's own message leaves it out)
    ("retention:\n\tbench: {keep: 1}\n", "", "found character '\\t' that cannot start"),
    ('families:\n  x: {run_pattern: "a\\d"}\n', "", "unknown escape character 'd'"),
    ("retention: {bench: {keep: 1}\n", "", "expected ',' or '}', but got '<stream end>'"),
    (
        "a: &a [x, x, x, x, x, x, x, x, x]\n"
        + "".join(
            f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n"
            for p, c in zip("abcdefgh", "bcdefghi", strict=True)
        ),
        "",
        "more than 100,000 values",
    ),
]


@pytest.mark.parametrize(("text", "key", "words"), BAD)
def test_bad_config_is_one_clear_error(tmp_path: Path, text: str, key: str, words: str) -> None:
    path = tmp_path / "artifacts.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert info.value.key_path == key
    if key:
        assert f": {key}: " in message
    assert words in message
    assert "\n" not in message


def test_object_tag_is_never_executed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "artifacts").mkdir()
    (tmp_path / "c.yaml").write_text("!!python/object/apply:os.system ['touch PWNED']\n")
    result = run_main("--config", "c.yaml", "scan")
    assert result.code == 2
    assert not (tmp_path / "PWNED").exists()
    assert result.err.startswith("config error: c.yaml: invalid YAML")


def test_bad_config_touches_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "artifacts" / "bench").mkdir(parents=True)
    (tmp_path / "artifacts" / "bench" / "a_20250101_000000.md").write_text("Status: PASS\n")
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "artifacts.yaml").write_text("retention:\n  bench: {keep: -5}\n")
    for command in (["scan"], ["list"], ["pin", "--id", "00000000", "--on"]):
        result = run_main(*command)
        assert result.code == 2, command
        assert result.err.count("\n") == 1
        assert "retention.bench.keep" in result.err
    assert sorted(p.name for p in (tmp_path / "artifacts").iterdir()) == ["bench"]


def test_explicit_missing_config_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.yaml")


def test_schema_rejects_unknown_keys_everywhere() -> None:
    schema = load_schema("config.schema.json")

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node:
                assert node.get("additionalProperties") is False, json.dumps(node)[:80]
            for value in node.values():
                walk(value)

    walk(schema)
