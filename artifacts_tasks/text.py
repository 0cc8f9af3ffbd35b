"""How sizes and counts read in tables, summaries and reports."""

from __future__ import annotations


def human_size(n: int) -> str:
    """Sizes as in the mission's examples: 0B, 856K, 2.1M (one decimal below 10)."""
    value = float(n)
    for unit in ("B", "K", "M", "G", "T"):
        if value < 1024 or unit == "T":
            if unit == "B":
                return f"{n}B"
            return f"{value:.1f}{unit}" if value < 10 else f"{value:.0f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")


def plural(n: int, word: str) -> str:
    """`1 run`, `2 runs`; `1 family`, `2 families`."""
    if n == 1:
        return f"{n} {word}"
    return f"{n} {word[:-1]}ies" if word.endswith("y") else f"{n} {word}s"


def md_cell(text: str) -> str:
    """Text fit for one cell of a Markdown table (backslashes, pipes and newlines escaped)."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")
