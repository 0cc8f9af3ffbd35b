"""Markdown compaction: drop empty sections, write headings as ATX, and prove nothing else moved.

Headings are found by markdown-it-py (``commonmark`` preset), never by regexes, so a
``# fake`` inside a code block, an HTML block or a list is not a heading to us. The rules:

* Only top-level headings (token level 0) are touched. A heading inside a block quote or a
  list item is content of the section around it, and is never removed nor rewritten.
* A section is empty when nothing but blank lines (spaces and tabs only) stands between its
  heading and the next top-level heading of the same or higher level, or the end of the
  document. A deeper heading, a link reference definition, an HTML comment: all content.
* Removal goes to a fixpoint: a section whose only content is removed headings is empty too
  (``# A`` over an empty ``## B`` goes with it; a file of nothing but headings comes out
  empty). A user who asks for empty sections to go expects none left, and a second run
  must change nothing: compaction is idempotent, which one pass over the original is not.
* Removing a heading removes the lines of its section: the heading line(s) and the blank
  lines after it up to the next kept heading. Blank lines before it belong to the section
  above and stay. The lines that stay keep every byte, their line endings included: when the
  last line of a file without a final newline is removed, the new last line keeps its
  newline (dropping it would change the HTML of a code or HTML block ending there).
* Removal must not join the lines around it into one block: ``text``, a removed heading,
  then a setext ``Foo``/``===`` would make ``text Foo`` the heading, and an indented heading
  after a list would move into it. Where a blank line of the removed lines can keep the two
  apart, that one stays; where none can, the first heading stays (in ``kept_empty``).
* ``canonical_headers``: setext becomes ATX, ATX gets its ``#`` count, one space, the text,
  no closing ``#``s, no indent; an empty heading is the ``#``s alone. A text ending in what
  would read as a closing sequence gets its last ``#`` escaped (``\\#``). A setext heading
  over several lines stays as it is (``kept_setext``): one ATX line cannot hold its line
  breaks, and the rendered HTML would change.

Outside the removed and rewritten heading lines every byte stays, line endings (CRLF, lone
CR, a mix) included. NUL and lone surrogates (from a surrogateescape decode) stay in the text;
only the copy markdown-it reads has them as U+FFFD, at the same positions. ``check`` renders
the original and the result and compares the HTML; a result that fails it is refused, and
the original comes back with the reason. Content never raises, a markdown-it crash included.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from markdown_it import MarkdownIt
from markdown_it.token import Token

_MD = MarkdownIt("commonmark")
_LINES = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")
_UNSAFE_CHARS = re.compile("[\x00\ud800-\udfff]")
# Blocks that end on their own line: what follows them starts afresh. (A paragraph, a list,
# a quote, a link reference definition may take the next line in; an indented code block
# cannot take a heading's line, indented three spaces at most.)
_CLOSED = frozenset({"heading_open", "hr", "fence", "code_block", "html_block"})


@dataclass(frozen=True)
class Heading:
    """A top-level heading of the original: 1-based line, level 1-6, text on one line."""

    line: int
    level: int
    text: str


@dataclass(frozen=True)
class Result:
    """The compacted text and what was done to it; `refused` says why nothing was."""

    text: str
    removed: tuple[Heading, ...] = ()
    canonicalised: tuple[Heading, ...] = ()
    kept_empty: tuple[Heading, ...] = ()
    kept_setext: tuple[Heading, ...] = ()
    refused: str | None = None

    @property
    def changed(self) -> bool:
        """Whether `text` differs from the original (each entry listed changes a line)."""
        return bool(self.removed or self.canonicalised)


@dataclass(frozen=True)
class _Found:
    """A top-level heading with its 0-based line span [start, end) and its source text."""

    heading: Heading
    start: int
    end: int
    setext: bool
    content: str | None  # the inline source from the original; None over several lines


@dataclass(frozen=True)
class _Doc:
    """The original as lines and tokens, its top-level headings, where their sections end."""

    tokens: list[Token]
    env: dict[str, object]
    lines: list[tuple[str, str]]
    found: list[_Found]
    bounds: list[int]  # bounds[i]: first line after heading i's section
    at_line: dict[int, int]  # first line of a heading -> its index in found
    closed: frozenset[int]  # last lines of top-level blocks that no following line continues


@dataclass(frozen=True)
class _Plan:
    """Which headings go, which empty ones stay, which blank lines stay as separators."""

    removed: frozenset[int]
    pinned: frozenset[int]
    separators: tuple[int, ...]


_NOTHING = _Plan(frozenset(), frozenset(), ())
_UNSAFE = -1  # from _join: no line can stay to keep the blocks around a run apart


def compact_markdown(text: str, *, remove_empty_sections: bool, canonical_headers: bool) -> Result:
    """Compact one Markdown document; the original comes back, with a reason, if unsafe."""
    if not (remove_empty_sections or canonical_headers):
        return Result(text)
    try:
        doc = _read(text)
    except _Unparseable as exc:
        return Result(text, refused=str(exc))
    plan = _plan(doc, canonical=canonical_headers) if remove_empty_sections else _NOTHING
    lines, found = doc.lines, doc.found
    drop = [False] * len(lines)
    for i in plan.removed:
        drop[found[i].start : doc.bounds[i]] = [True] * (doc.bounds[i] - found[i].start)
    for k in plan.separators:
        drop[k] = False
    replace: dict[int, tuple[str, str]] = {}
    canonicalised: list[Heading] = []
    kept_setext: list[Heading] = []
    for i, f in enumerate(found):
        if i in plan.removed or not canonical_headers:
            continue
        if f.content is None:
            kept_setext.append(f.heading)
            continue
        new = _atx(f.heading.level, f.content)
        if f.setext or new != lines[f.start][0]:
            replace[f.start] = (new, lines[f.end - 1][1])
            drop[f.start + 1 : f.end] = [True] * (f.end - f.start - 1)
            canonicalised.append(f.heading)
    out = [replace.get(k, line) for k, line in enumerate(lines) if not drop[k]]
    result = Result(
        "".join(body + eol for body, eol in out),
        removed=tuple(found[i].heading for i in sorted(plan.removed)),
        canonicalised=tuple(canonicalised),
        kept_empty=tuple(found[i].heading for i in sorted(plan.pinned)),
        kept_setext=tuple(kept_setext),
    )
    if result.changed and (reason := _check(doc.tokens, doc.env, result)) is not None:
        return Result(text, refused=reason)
    return result


def check(original: str, result: Result) -> str | None:
    """None when `result.text` renders as `original` minus exactly `result.removed`, else why."""
    env: dict[str, object] = {}
    try:
        tokens = _MD.parse(_sanitized(original), env)
    except Exception as exc:  # markdown-it is third-party: its crash must not abort a run
        return f"markdown-it failed: {type(exc).__name__}: {exc}"
    return _check(tokens, env, result)


def _check(tokens: Sequence[Token], env: dict[str, object], result: Result) -> str | None:
    """`check`, given the original's tokens (and the env holding its references)."""
    try:
        gone = {(h.line, h.level) for h in result.removed}
        kept: list[Token] = []
        skip = 0
        for token in tokens:
            if skip:
                skip -= 1
                continue
            if token.type == "heading_open" and token.level == 0 and token.map is not None:
                key = (token.map[0] + 1, int(token.tag[1:]))
                if key in gone:
                    gone.discard(key)
                    skip = 2  # its inline and heading_close tokens
                    continue
            kept.append(token)
        if gone:
            return f"no heading to remove at line(s) {sorted(line for line, _ in gone)}"
        expected = _MD.renderer.render(kept, _MD.options, env)
        actual = _MD.render(_sanitized(result.text))
    except Exception as exc:  # markdown-it is third-party: its crash must not abort a run
        return f"markdown-it failed: {type(exc).__name__}: {exc}"
    if actual == expected:
        return None
    at = next((k for k, (a, b) in enumerate(zip(actual, expected, strict=False)) if a != b), None)
    at = min(len(actual), len(expected)) if at is None else at
    return (
        f"the result would render differently at HTML offset {at}: "
        f"{expected[at : at + 40]!r} became {actual[at : at + 40]!r}"
    )


class _Unparseable(Exception):
    """markdown-it failed on the text, or its lines do not match ours."""


def _sanitized(text: str) -> str:
    """A same-length copy markdown-it can always render: NUL and lone surrogates -> U+FFFD."""
    return _UNSAFE_CHARS.sub("\ufffd", text)


def _blank(body: str) -> bool:
    return body.strip(" \t") == ""


def _read(text: str) -> _Doc:
    """Split into (body, line ending) pairs where CommonMark ends lines; find the headings."""
    lines = []
    for match in _LINES.finditer(text):
        body = match.group().rstrip("\r\n")
        lines.append((body, match.group()[len(body) :]))
    try:
        env: dict[str, object] = {}
        tokens = _MD.parse(_sanitized(text), env)
    except Exception as exc:  # see check()
        raise _Unparseable(f"markdown-it failed: {type(exc).__name__}: {exc}") from exc
    found: list[_Found] = []
    closed: set[int] = set()
    for k, token in enumerate(tokens):
        if token.level != 0 or token.map is None or token.type not in _CLOSED:
            continue
        start, end = token.map
        if end > len(lines):
            raise _Unparseable("markdown-it's lines do not match the text's")
        closed.add(end - 1)
        if token.type == "heading_open":
            found.append(_found(lines, start, end, token, tokens[k + 1].content))
    bounds = [len(lines)] * len(found)
    stack: list[int] = []  # headings below, each shallower than the one above it
    for i in reversed(range(len(found))):
        while stack and found[stack[-1]].heading.level > found[i].heading.level:
            stack.pop()
        bounds[i] = found[stack[-1]].start if stack else len(lines)
        stack.append(i)
    return _Doc(
        tokens,
        env,
        lines,
        found,
        bounds,
        {f.start: i for i, f in enumerate(found)},
        frozenset(closed),
    )


def _found(
    lines: Sequence[tuple[str, str]], start: int, end: int, token: Token, parsed: str
) -> _Found:
    """One heading, its text sliced from the original line (NUL and surrogates kept)."""
    level, setext = int(token.tag[1:]), token.markup in ("=", "-")
    if setext and end - start > 2:
        joined = " ".join(body.strip() for body, _ in lines[start : end - 1])
        return _Found(Heading(start + 1, level, joined), start, end, setext, None)
    # The sanitized copy has the same positions: find the parsed text there, slice the original.
    body = lines[start][0]
    safe = _sanitized(body)
    at = safe.find(parsed, 0 if setext else len(safe) - len(safe.lstrip(" ")) + level)
    if at < 0:
        raise _Unparseable(f"cannot find the text of the heading at line {start + 1}")
    content = body[at : at + len(parsed)]
    return _Found(Heading(start + 1, level, content), start, end, setext, content)


def _plan(doc: _Doc, *, canonical: bool) -> _Plan:
    """Remove every empty section, keeping those whose removal would merge two blocks."""
    pinned: set[int] = set()
    while True:
        removed = _empty_sections(doc, pinned)
        joins = [
            (first, _join(doc, s, t, canonical=canonical)) for first, s, t in _runs(doc, removed)
        ]
        unsafe = {first for first, how in joins if how == _UNSAFE}
        if not unsafe:
            separators = tuple(how for _, how in joins if how is not None)
            return _Plan(frozenset(removed), frozenset(pinned), separators)
        pinned |= unsafe  # each pass pins at least one more heading, so this ends


def _empty_sections(doc: _Doc, pinned: set[int]) -> set[int]:
    """The fixpoint: sections holding nothing but blank lines and removed headings."""
    gone = [_blank(body) for body, _ in doc.lines]
    removed: set[int] = set()
    for i in reversed(range(len(doc.found))):
        f = doc.found[i]
        if i not in pinned and all(gone[f.end : doc.bounds[i]]):
            removed.add(i)
            gone[f.start : f.end] = [True] * (f.end - f.start)
    return removed


def _runs(doc: _Doc, removed: set[int]) -> list[tuple[int, int, int]]:
    """Maximal runs of removed lines as (index of the first heading, start, end)."""
    runs: list[tuple[int, int, int]] = []
    for i in sorted(removed):
        start, end = doc.found[i].start, doc.bounds[i]
        if runs and start <= runs[-1][2]:
            runs[-1] = (runs[-1][0], runs[-1][1], max(end, runs[-1][2]))
        else:
            runs.append((i, start, end))
    return runs


def _join(doc: _Doc, s: int, t: int, *, canonical: bool) -> int | None:
    """Whether lines [s, t) can go: None if so, a blank line of theirs to keep, or _UNSAFE."""
    lines = doc.lines
    if t == len(lines):
        return None
    prev = next((k for k in range(s - 1, -1, -1) if not _blank(lines[k][0])), None)
    if prev is None or prev in doc.closed:
        return None  # nothing is open above: every line after starts afresh
    nxt = doc.found[doc.at_line[t]]
    rewritten = canonical and nxt.content is not None  # it will be a flush ATX line
    if not (rewritten or lines[t][0][:1] not in (" ", "\t")):
        return _UNSAFE  # an indented line may continue a list item above
    if rewritten or not nxt.setext or _blank(lines[s - 1][0]):
        return None  # an ATX line interrupts any block; after a blank, a flush line is new
    # The setext text would continue the paragraph above: keep a blank line in between
    # (not an empty LF line after a lone CR: the two would read as one CRLF).
    merges = ("", "\n") if lines[s - 1][1] == "\r" else None
    keep = (k for k in range(t - 1, s - 1, -1) if _blank(lines[k][0]) and lines[k] != merges)
    return next(keep, _UNSAFE)


def _atx(level: int, content: str) -> str:
    """The canonical ATX line; a text ending like a closing sequence gets its last # escaped."""
    if not content:
        return "#" * level
    rest = content.rstrip("#")
    if rest != content and (not rest or rest[-1] in " \t"):
        content = content[:-1] + "\\#"
    return "#" * level + " " + content
