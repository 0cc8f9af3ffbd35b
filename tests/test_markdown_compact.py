"""Markdown compaction: edge cases, CommonMark's 652 examples, real documents, properties."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt
from markdown_it.token import Token

from artifacts_tasks import markdown_compact
from artifacts_tasks.markdown_compact import Heading, Result, check, compact_markdown

from .conftest import REPO

CORPORA = REPO.parent / "shared" / "corpora"
SPEC = CORPORA / "commonmark" / "commonmark-0.31.2.spec.json"
MD = MarkdownIt("commonmark")
BOTH = {"remove_empty_sections": True, "canonical_headers": True}
REMOVE = {"remove_empty_sections": True, "canonical_headers": False}
CANON = {"remove_empty_sections": False, "canonical_headers": True}


def render(text: str) -> str:
    html: str = MD.render(re.sub("[\x00\ud800-\udfff]", "\ufffd", text))
    return html


def expected_html(original: str, removed: tuple[Heading, ...]) -> str:
    """The original's HTML minus the removed headings, built block by block, not by the module."""
    env: dict[str, Any] = {}
    tokens = MD.parse(re.sub("[\x00\ud800-\udfff]", "\ufffd", original), env)
    blocks: list[list[Token]] = []
    depth = 0
    for token in tokens:
        if depth == 0:
            blocks.append([])
        blocks[-1].append(token)
        depth += token.nesting
    fragments = [MD.renderer.render(block, MD.options, env) for block in blocks]
    assert "".join(fragments) == render(original)
    lines = {h.line for h in removed}
    kept = []
    for block, fragment in zip(blocks, fragments, strict=True):
        head = block[0]
        if head.type == "heading_open" and head.map and head.map[0] + 1 in lines:
            assert re.fullmatch(r"<(h[1-6])>.*</\1>\n", fragment, re.DOTALL)
            lines.discard(head.map[0] + 1)
            continue
        kept.append(fragment)
    assert not lines, f"removed headings not found: {lines}"
    return "".join(kept)


def assert_sound(original: str, result: Result, options: dict[str, bool]) -> None:
    """Not refused, the module's check and ours agree, and a second run changes nothing."""
    assert result.refused is None, result.refused
    assert check(original, result) is None
    assert render(result.text) == expected_html(original, result.removed)
    again = compact_markdown(result.text, **options)
    assert again.text == result.text and not again.changed and again.refused is None


def lines_of(*headings: tuple[int, int, str]) -> tuple[Heading, ...]:
    return tuple(Heading(*h) for h in headings)


# (input, options, expected text, removed (line, level, text), canonicalised lines)
CASES: list[tuple[str, dict[str, bool], str, tuple[tuple[int, int, str], ...], tuple[int, ...]]] = [
    ("# A\n# B\ntext\n", REMOVE, "# B\ntext\n", ((1, 1, "A"),), ()),
    ("# A\n\n\n# B\ntext\n", REMOVE, "# B\ntext\n", ((1, 1, "A"),), ()),
    ("text\n\n# A\n\n\n", REMOVE, "text\n\n", ((3, 1, "A"),), ()),  # blanks above stay
    ("# A\n## B\ntext\n", REMOVE, "# A\n## B\ntext\n", (), ()),  # a deeper heading is content
    ("# A\n## B\n# C\ntext\n", REMOVE, "# C\ntext\n", ((1, 1, "A"), (2, 2, "B")), ()),
    ("# A\n## B\n# C\n", REMOVE, "", ((1, 1, "A"), (2, 2, "B"), (3, 1, "C")), ()),
    (
        "# A\n[a]: /u\n# B\n\n## C\n# D\n[a]\n",
        REMOVE,
        "# A\n[a]: /u\n# D\n[a]\n",
        ((3, 1, "B"), (5, 2, "C")),
        (),
    ),
    ("# A\n> # B\n", REMOVE, "# A\n> # B\n", (), ()),  # a quoted heading is content
    ("```\n# fake\n```\n# A\n", REMOVE, "```\n# fake\n```\n", ((4, 1, "A"),), ()),
    ("#5 bolt\n#hashtag\n", BOTH, "#5 bolt\n#hashtag\n", (), ()),
    ("# A\r\n\r\n# B\r\nx\r\n", REMOVE, "# B\r\nx\r\n", ((1, 1, "A"),), ()),
    ("x\n# A", REMOVE, "x\n", ((2, 1, "A"),), ()),  # kept lines keep their line endings
    ("<!-- c -->\r\n# A", REMOVE, "<!-- c -->\r\n", ((2, 1, "A"),), ()),
    ("x\n# A\n\n# B\ny", BOTH, "x\n# B\ny", ((2, 1, "A"),), ()),
    ("x\r\n# A\r\n", REMOVE, "x\r\n", ((2, 1, "A"),), ()),
    ("Title\n===   \ntext\n", CANON, "# Title\ntext\n", (), (1,)),
    ("Sub\r\n---\r\ntext", CANON, "## Sub\r\ntext", (), (1,)),
    ("Last\n---", CANON, "## Last", (), (1,)),
    ("#\n##   ##\ntext\n", CANON, "#\n##\ntext\n", (), (2,)),  # empty headings
    ("# foo ###\n  ## bar\t \n", CANON, "# foo\n## bar\n", (), (1, 2)),
    ("#\tfoo\n", CANON, "# foo\n", (), (1,)),
    ("# foo \\#\n", CANON, "# foo \\#\n", (), ()),  # already canonical
    ("# foo # ##\n", CANON, "# foo \\#\n", (), (1,)),  # `foo #` kept by an escape
    ("# ## #\n", CANON, "# #\\#\n", (), (1,)),
    ("foo #\n---\n", CANON, "## foo \\#\n", (), (1,)),
    ("Two\nlines\n===\ntext\n", CANON, "Two\nlines\n===\ntext\n", (), ()),  # kept_setext
    ("> Q\n> ===\n- # L\n", CANON, "> Q\n> ===\n- # L\n", (), ()),  # only top level
    ("# A\n\udc80\x00\n#  B\udc81 #\n", CANON, "# A\n\udc80\x00\n# B\udc81\n", (), (3,)),
    # Removal must not join the lines around it into one block.
    ("text\n# A\nFoo\n===\nx\n", REMOVE, "text\n# A\nFoo\n===\nx\n", (), ()),  # kept_empty
    ("text\n# A\n\nFoo\n===\nx\n", REMOVE, "text\n\nFoo\n===\nx\n", ((2, 1, "A"),), ()),
    ("text\n# A\nFoo\n===\nx\n", BOTH, "text\n# Foo\nx\n", ((2, 1, "A"),), (3,)),
    ("- a\n\n# A\n  # B\nx\n", REMOVE, "- a\n\n# A\n  # B\nx\n", (), ()),
    ('[a]: /u\n# A\n"t"\n===\n[a]\n', REMOVE, '[a]: /u\n# A\n"t"\n===\n[a]\n', (), ()),
    ("text\n# A\n## B\nFoo\n===\nx\n", REMOVE, "text\n# A\nFoo\n===\nx\n", ((3, 2, "B"),), ()),
]


@pytest.mark.parametrize(("text", "options", "want", "removed", "canonical"), CASES)
def test_cases(
    text: str,
    options: dict[str, bool],
    want: str,
    removed: tuple[tuple[int, int, str], ...],
    canonical: tuple[int, ...],
) -> None:
    result = compact_markdown(text, **options)
    assert result.text == want
    assert result.removed == lines_of(*removed)
    assert tuple(h.line for h in result.canonicalised) == canonical
    assert result.changed == (want != text)
    assert_sound(text, result, options)


def test_what_is_left_is_reported() -> None:
    kept = compact_markdown("text\n# A\nFoo\n===\nx\n", **REMOVE)
    assert kept.kept_empty == (Heading(2, 1, "A"),) and not kept.changed
    setext = compact_markdown("Two\n  lines\n===\n", **CANON)
    assert setext.kept_setext == (Heading(1, 1, "Two lines"),) and not setext.changed


def test_off_is_identity_and_surrogates_survive() -> None:
    text = "caf\udce9\n=====\n\n# A\n"
    assert compact_markdown(text, remove_empty_sections=False, canonical_headers=False) == Result(
        text
    )
    result = compact_markdown(text, **CANON)
    assert result.text == "# caf\udce9\n\n# A\n"
    assert result.text.encode("utf-8", "surrogateescape") == b"# caf\xe9\n\n# A\n"


def test_check_names_what_differs() -> None:
    original = "# A\n# B\ntext\n"
    assert check(original, Result("# B\ntext\n", removed=(Heading(1, 1, "A"),))) is None
    assert "render differently" in (
        check(original, Result("text\n", removed=(Heading(1, 1, "A"),))) or ""
    )
    assert "no heading to remove" in (
        check(original, Result("", removed=(Heading(3, 1, "x"),))) or ""
    )


def test_a_failed_check_returns_the_original(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(markdown_compact, "_join", lambda *a, **k: None)  # every run "can go"
    text = "text\n# A\nFoo\n===\nx\n"  # without the join rule, `text Foo` would become the heading
    result = compact_markdown(text, **REMOVE)
    assert result.text == text and not result.changed
    assert result.refused is not None and "render differently" in result.refused


# -- CommonMark 0.31.2: every example, every option --------------------------------------------

EXAMPLES: list[dict[str, Any]] = json.loads(SPEC.read_text(encoding="utf-8"))


@pytest.mark.parametrize("options", [BOTH, REMOVE, CANON], ids=["both", "remove", "canon"])
def test_commonmark_examples(options: dict[str, bool]) -> None:
    assert len(EXAMPLES) == 652
    key = (options["remove_empty_sections"], options["canonical_headers"])
    results = {
        e["example"]: (e["markdown"], compact_markdown(e["markdown"], **options)) for e in EXAMPLES
    }
    assert {n for n, (_, r) in results.items() if r.refused} == set()  # none refused
    for text, result in results.values():
        assert_sound(text, result, options)
    assert sorted(n for n, (_, r) in results.items() if r.changed) == CHANGED[key]
    counts = Counter(
        {
            "removed": sum(len(r.removed) for _, r in results.values()),
            "canonicalised": sum(len(r.canonicalised) for _, r in results.values()),
            "kept_empty": sum(len(r.kept_empty) for _, r in results.values()),
            "kept_setext": sum(len(r.kept_setext) for _, r in results.values()),
        }
    )
    assert dict(counts) == COUNTS[key]


# What each run does to the 652 examples: which change, and how many headings of each kind.
CHANGED = {
    (True, True): [10, 59, 62, 66, 67, 68, 71, 72, 73, 74, 75, 76, 79, 80, 81, 82, 83, 84, 86, 89,
                   90, 91, 95, 96, 102, 103, 115, 141, 215, 227, 646, 647],
    (True, False): [10, 62, 66, 67, 68, 71, 72, 73, 74, 75, 76, 79, 80, 81, 82, 83, 84, 86, 89, 90,
                    95, 96, 102, 141, 227, 646, 647],
    (False, True): [10, 59, 67, 68, 71, 72, 73, 79, 80, 83, 84, 86, 89, 90, 91, 96, 102, 103, 115,
                    141, 215, 647],
}  # fmt: skip
COUNTS = {
    (True, True): {"removed": 44, "canonicalised": 8, "kept_empty": 0, "kept_setext": 0},
    (True, False): {"removed": 44, "canonicalised": 0, "kept_empty": 0, "kept_setext": 0},
    (False, True): {"removed": 0, "canonicalised": 33, "kept_empty": 0, "kept_setext": 3},
}


# -- real documents ------------------------------------------------------------------------------


def corpus(name: str) -> str:
    return (CORPORA / "markdown" / name).read_bytes().decode("utf-8", "surrogateescape")


@pytest.mark.parametrize(
    ("name", "trap"),
    [
        ("freqtrade_docs_strategy-customization.md", Heading(785, 3, "Example Usages")),
        (
            "nautilus_trader_docs_environment_setup.md",
            Heading(426, 2, "Nautilus CLI developer guide"),
        ),
        ("freqtrade_ft_client_README.md", Heading(1, 1, "Freqtrade Client")),
    ],
)
def test_trap_headings_are_named(name: str, trap: Heading) -> None:
    text = corpus(name)
    result = compact_markdown(text, **REMOVE)
    assert result.removed == (trap,)
    original = text.splitlines(keepends=True)
    assert original[trap.line - 1].startswith("#" * trap.level + " " + trap.text)
    # Exactly the heading and the blank lines under it are gone.
    gone = len(original) - len(result.text.splitlines(keepends=True))
    assert all(not line.strip() for line in original[trap.line : trap.line - 1 + gone])
    assert result.text == "".join(original[: trap.line - 1] + original[trap.line - 1 + gone :])
    assert_sound(text, result, REMOVE)


def test_requests_history_setext_become_atx() -> None:
    text = corpus("requests_HISTORY.md")
    result = compact_markdown(text, **CANON)
    assert len(result.canonicalised) == 164 and not result.removed and not result.kept_setext
    lines = text.splitlines(keepends=True)
    want = list(lines)
    for h in reversed(result.canonicalised):  # the diff touches the heading lines only
        assert set(lines[h.line].strip()) == {"=" if h.level == 1 else "-"}
        want[h.line - 1 : h.line + 1] = ["#" * h.level + " " + h.text + "\n"]
    assert result.text == "".join(want)
    assert_sound(text, result, CANON)


@pytest.mark.parametrize("options", [BOTH, REMOVE, CANON], ids=["both", "remove", "canon"])
@pytest.mark.parametrize("path", sorted((CORPORA / "markdown").glob("*.md")), ids=lambda p: p.name)
def test_corpus_is_sound_and_idempotent(path: Path, options: dict[str, bool]) -> None:
    text = path.read_bytes().decode("utf-8", "surrogateescape")
    result = compact_markdown(text, **options)
    assert_sound(text, result, options)
    assert not result.kept_empty and not result.kept_setext


# -- properties ----------------------------------------------------------------------------------

VOCABULARY: list[list[str]] = [
    *[["#" * n + " H" + str(n)] for n in range(1, 7)],
    ["### closed ###"], ["  ## indented  "], ["   # three"], ["#"], ["# A # ##"], ["#\tTab \\#"],
    ["## \udcff"], ["Title", "====="], ["Sub", "---  "], ["Two", "lines", "==="],
    ["  Indented", "  ---"], [" Foo  ", "=\t"], ["foo #", "---"],
    [""], [""], [""], ["   "], ["\t"],
    ["Some *text*."], ["text with [ref] and [other]"], ["#5 bolt"], ["nul\x00 here"],
    ["```", "# fake", "```"], ["~~~", "# fake", "Fake", "===", "~~~"], ["    # indented code"],
    ["- item"], ["- # list heading"], ["1. one"], ["  continued"],
    ["> quote"], ["> # quoted heading"], ["> Q", "> ==="],
    ["[ref]: /url"], ["[other]: /o 'title'"], ['"title"'], ["[ref]:"],
    ["<div>"], ["</div>"], ["<!-- # comment -->"], ["<pre>", "# x"], ["</pre>"], ["<b>"],
    ["***"], ["---"], ["==="], ["10) ten"], ["> - # deep"], ["line  "], ["line\\"],
]  # fmt: skip


LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")
ATX = re.compile(r"#{1,6}(?: [^ \t\r\n](?:[^\r\n]*[^ \t\r\n])?)?(?:\r\n|\r|\n)?")


@st.composite
def documents(draw: st.DrawFn) -> str:
    lines = [
        line for group in draw(st.lists(st.sampled_from(VOCABULARY), max_size=25)) for line in group
    ]
    if draw(st.booleans()):  # one line ending for the file, or any mix of them
        eols = [draw(st.sampled_from(["\n", "\r\n", "\r"]))] * len(lines)
    else:
        eols = draw(
            st.lists(
                st.sampled_from(["\n", "\r\n", "\r"]), min_size=len(lines), max_size=len(lines)
            )
        )
    if draw(st.booleans()) and lines:
        eols[-1] = ""  # no final newline
    return "".join(line + eol for line, eol in zip(lines, eols, strict=True))


@settings(max_examples=400, deadline=None)
@given(documents(), st.sampled_from([BOTH, REMOVE, CANON]))
def test_property_sound_and_idempotent(text: str, options: dict[str, bool]) -> None:
    result = compact_markdown(text, **options)
    assert_sound(text, result, options)
    # Whole lines go, byte for byte; the only new lines are canonical ATX headings.
    rewritten = ATX.fullmatch if options["canonical_headers"] else lambda _: None
    original = iter(LINE.findall(text))
    assert all(line in original for line in LINE.findall(result.text) if not rewritten(line))


@settings(max_examples=100, deadline=None)
@given(documents())
def test_property_off_changes_nothing(text: str) -> None:
    result = compact_markdown(text, remove_empty_sections=False, canonical_headers=False)
    assert result == Result(text) and not result.changed
