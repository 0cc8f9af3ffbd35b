"""Which family and which run a path belongs to, its timestamp, its status, its id."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import NamedTuple

import xxhash

from .config import Family

PASS, FAIL, UNKNOWN = "pass", "fail", "unknown"
PASS_WORDS = frozenset({"pass", "passed", "ok", "success", "green"})
FAIL_WORDS = frozenset({"fail", "failed", "error", "red"})
STATUS_KEYS = ("status", "result", "verdict")
BOOL_KEYS = ("passed", "ok", "success")


def glob_to_regex(pattern: str) -> str:
    """Translate a family glob (`**` = any depth, `*`/`?` within a segment) to a regex."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        if pattern.startswith("**/", i):
            out.append("(?:[^/]+/)*")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            end = pattern.find("]", i + 2)
            if end == -1:
                out.append(re.escape("["))
                i += 1
            else:
                body = pattern[i + 1 : end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body.replace(chr(92), chr(92) * 2)}]")
                i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out)


class DirMatcher(NamedTuple):
    """How to classify the files of one directory: one regex, over names or whole paths."""

    match: Callable[[str], re.Match[str] | None]
    whole_path: bool  # True: match `dir/name`, else the name alone
    families: dict[str, Family]  # regex group name -> family

    def family_of(self, rel: str, name: str) -> Family | None:
        if name[0] == ".":
            return None
        m = self.match(rel if self.whole_path else name)
        return self.families[m.lastgroup] if m is not None and m.lastgroup else None


def _dir_regex(dir_glob: str) -> str:
    """A pattern's directory part; a trailing `/**` also matches the directory itself, as
    `**/` matches zero directories (`results/**/*.md` takes `results/a.md`)."""
    if dir_glob == "**":
        return ".*"
    if dir_glob.endswith("/**"):
        return glob_to_regex(dir_glob[:-3]) + "(?:/.*)?"
    return glob_to_regex(dir_glob)


class Classifier:
    """Maps a root-relative POSIX path to its family: the first (config order) that matches.

    Patterns are split into a directory part and a name part, so each directory is judged
    once (most hold no artifacts at all) and each file costs one small regex match.
    """

    def __init__(self, families: Sequence[Family]) -> None:
        self.families = tuple(families)
        # (family, directory regex or None for a whole-path pattern, name/path regex)
        self._patterns: list[tuple[Family, re.Pattern[str] | None, str]] = []
        for family in self.families:
            for pattern in family.patterns:
                dir_glob, _, name_glob = pattern.rpartition("/")
                if "**" in name_glob:
                    self._patterns.append((family, None, glob_to_regex(pattern)))
                else:
                    dir_re = re.compile(r"\A" + _dir_regex(dir_glob) + r"\Z", re.DOTALL)
                    self._patterns.append((family, dir_re, glob_to_regex(name_glob)))
        self._dirs: dict[str, DirMatcher | None] = {}
        self._run = {
            f.name: re.compile(f.run_pattern) for f in self.families if f.run_pattern is not None
        }

    def for_directory(self, rel_dir: str) -> DirMatcher | None:
        """The matcher for files directly in `rel_dir`; None when no family can match there."""
        if rel_dir in self._dirs:
            return self._dirs[rel_dir]
        matcher = None
        if not any(part.startswith(".") for part in rel_dir.split("/") if part):
            whole = any(dir_re is None for _, dir_re, _ in self._patterns)
            prefix = re.escape(f"{rel_dir}/") if whole and rel_dir else ""
            alts: list[str] = []
            groups: dict[str, Family] = {}
            for family, dir_re, regex in self._patterns:
                if dir_re is None or dir_re.match(rel_dir):
                    group = f"g{len(alts)}"
                    groups[group] = family
                    body = regex if dir_re is None else prefix + regex
                    alts.append(f"(?P<{group}>{body})")
            if alts:
                compiled = re.compile(r"\A(?:" + "|".join(alts) + r")\Z", re.DOTALL)
                matcher = DirMatcher(compiled.match, whole, groups)
        self._dirs[rel_dir] = matcher
        return matcher

    def family_of(self, rel: str) -> Family | None:
        """The family of `rel`, or None when it is not an artifact."""
        rel_dir, _, name = rel.rpartition("/")
        matcher = self.for_directory(rel_dir)
        return matcher.family_of(rel, name) if matcher is not None else None

    def run_pattern(self, family: str) -> re.Pattern[str] | None:
        return self._run.get(family)

    def run_key(self, family: Family, name: str) -> tuple[str, datetime | None]:
        """The run key of file `name` and the time it names (UTC), if any (DESIGN §2)."""
        return run_key(name, self._run.get(family.name))


def run_key(name: str, run_pattern: re.Pattern[str] | None) -> tuple[str, datetime | None]:
    """The run key of file `name` and the time it names (UTC), if any (DESIGN §2)."""
    if run_pattern is not None:
        m = run_pattern.search(name)
        if m is not None and m.group("run"):
            key = m.group("run")
            return key, find_timestamp(key)[1]
    key, when = find_timestamp(name)
    if key is not None and when is not None:
        return key, when
    return stem(name), None


_TS = re.compile(
    r"(?<!\d)(?:"
    r"(?P<a>\d{8})[_T-](?P<b>\d{6})(?P<z1>Z)?"
    r"|(?P<y>\d{4})-(?P<mo>\d{2})-(?P<d>\d{2})T(?P<h>\d{2})(?P<sep>[:-])(?P<mi>\d{2})(?P=sep)(?P<s>\d{2})(?P<z2>Z)?"
    r")(?!\d)"
)


def find_timestamp(name: str) -> tuple[str | None, datetime | None]:
    """The first valid timestamp token in `name`: its run key (`YYYYMMDDTHHMMSSZ`) and time.

    Every spelling of one moment gives the same key, so `a_20250906_143022.md` and
    `a_2025-09-06T14:30:22Z.json` are one run.
    """
    for m in _TS.finditer(name):
        if m.group("a"):
            d = m.group("a") + m.group("b")
        else:
            d = "".join(m.group("y", "mo", "d", "h", "mi", "s"))
        try:
            when = datetime(
                int(d[0:4]),
                int(d[4:6]),
                int(d[6:8]),
                int(d[8:10]),
                int(d[10:12]),
                int(d[12:14]),
                tzinfo=UTC,
            )
        except ValueError:  # not a real date or time, such as 20251399_999999
            continue
        return f"{d[:8]}T{d[8:]}Z", when
    return None, None


def stem(name: str) -> str:
    """The file name without its last extension (`a.tar.gz` -> `a.tar`, `.x` stays)."""
    dot = name.rfind(".")
    return name[:dot] if dot > 0 else name


def entry_id_hash(family: str, directory: str, run_key: str) -> str:
    """The full 32-hex-digit hash an entry id is a prefix of (8 digits unless they collide)."""
    data = f"{family}\x00{directory}\x00{run_key}".encode("utf-8", "surrogateescape")
    return str(xxhash.xxh3_128_hexdigest(data))


RunKey = tuple[str, str, str]  # (family, directory, run key)


def assign_ids(hashes: dict[RunKey, str], previous: dict[RunKey, str]) -> dict[RunKey, str]:
    """Run -> id. Ids are sticky: a run keeps the id it had (pins and trash folders name
    it). A new run gets the shortest prefix of its hash, 8 hex digits at least, that it
    shares with no other run's hash, so it can never equal an id in use."""
    ids = {k: previous[k] for k, h in hashes.items() if k in previous and h.startswith(previous[k])}
    ordered = sorted(hashes.values())
    rank = {h: i for i, h in enumerate(ordered)}
    for k, h in hashes.items():
        if k in ids:
            continue
        i = rank[h]
        length = 8
        for other in (
            ordered[i - 1] if i else None,
            ordered[i + 1] if i + 1 < len(ordered) else None,
        ):
            if other is not None:
                common = next((n for n in range(32) if h[n] != other[n]), 32)
                length = max(length, common + 1)
        ids[k] = h[:length]
    return ids


# ---- status -----------------------------------------------------------------------------


def word_status(value: object) -> str | None:
    """pass/fail for a verdict word or boolean, None when it says neither."""
    if isinstance(value, str):
        word = value.strip().lower()
        if word in PASS_WORDS:
            return PASS
        if word in FAIL_WORDS:
            return FAIL
    return None


def record_status(record: object) -> str | None:
    """The verdict a JSON value carries at its top level, if any."""
    if not isinstance(record, dict):
        return None
    for key in STATUS_KEYS:
        if key in record:
            found = word_status(record[key])
            if found is not None:
                return found
    for key in BOOL_KEYS:
        if isinstance(record.get(key), bool):
            return PASS if record[key] else FAIL
    return None


_HINT = re.compile(rb'"(?:status|result|verdict|passed|ok|success)"')


def jsonl_status(data: bytes) -> str | None:
    """The verdict of the last JSONL record that carries one, reading lines from the end."""
    pos = len(data)
    while pos > 0:
        nl = data.rfind(b"\n", 0, pos)
        line = data[nl + 1 : pos]
        pos = nl
        if _HINT.search(line):
            try:
                found = record_status(json.loads(line))
            except (ValueError, RecursionError):  # malformed, or nested beyond reason
                continue
            if found is not None:
                return found
    return None


def json_status(data: bytes) -> str | None:
    try:
        return record_status(json.loads(data))
    except (ValueError, RecursionError):  # malformed, or nested beyond reason
        return None


_MD_KEY = re.compile(
    r"^\s{0,3}(?:[-*+>]\s+)?[*_]{0,2}\s*(?:status|result|verdict)\s*[*_]{0,2}\s*:\s*[*_]{0,2}\s*:?"
    r"\s*[*_`]{0,2}\s*([A-Za-z]+)",
    re.IGNORECASE,
)
_MD_HEADING = re.compile(r"^\s{0,3}#{1,6}\s")
_MD_HEADING_WORD = re.compile(r"(?<![A-Za-z])(PASS(?:ED)?|FAIL(?:ED)?)(?![A-Za-z])")


def markdown_status(lines: Iterable[str]) -> str | None:
    """The first `Status: PASS`-like line, or heading with PASS/FAIL/✅/❌, decides."""
    for line in lines:
        m = _MD_KEY.match(line)
        if m is not None:
            found = word_status(m.group(1))
            if found is not None:
                return found
        if _MD_HEADING.match(line):
            words = _MD_HEADING_WORD.findall(line)
            if "❌" in line or any(w.startswith("FAIL") for w in words):
                return FAIL
            if "✅" in line or words:
                return PASS
    return None


_NAME_WORDS = re.compile(r"[A-Za-z]+")


def name_status(name: str) -> str | None:
    """Fallback: the words pass/fail in the file name."""
    words = {w.lower() for w in _NAME_WORDS.findall(name)}
    if words & {"fail", "failed"}:
        return FAIL
    if words & {"pass", "passed"}:
        return PASS
    return None


def content_status(name: str, data: bytes) -> str:
    """Status of one file from its (whole or tail) content, falling back to its name."""
    lower = name.lower()
    found: str | None = None
    if lower.endswith(".jsonl"):
        found = jsonl_status(data)
    elif lower.endswith(".json"):
        found = json_status(data)
    elif lower.endswith(".md"):
        found = markdown_status(data.decode("utf-8", "replace").splitlines())
    return found or name_status(name) or UNKNOWN


def run_status(statuses: Iterable[str]) -> str:
    """fail if any file says fail, else pass if any says pass, else unknown."""
    seen = set(statuses)
    if FAIL in seen:
        return FAIL
    return PASS if PASS in seen else UNKNOWN
