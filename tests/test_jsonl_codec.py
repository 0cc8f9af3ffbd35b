"""The JSONL codec gives back the original bytes, whatever they are, and pays on real data."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from artifacts_tasks import jsonl_codec as codec

from .conftest import REPO

CORPORA = REPO.parent / "shared" / "corpora"
needs_corpora = pytest.mark.skipif(
    not CORPORA.is_dir() and os.environ.get("CI") != "true",
    reason="../shared/corpora is not beside this clone",
)


def compact(data: bytes, **options: int) -> bytes:
    out = io.BytesIO()
    codec.encode(
        io.BytesIO(data),
        out,
        original_size=len(data),
        original_xxh3_128=xxhash.xxh3_128_hexdigest(data),
        **options,
    )
    return out.getvalue()


def expand(data: bytes) -> bytes:
    return b"".join(codec.decode(io.BytesIO(data)))


def assert_round_trip(data: bytes, **options: int) -> bytes:
    packed = compact(data, **options)
    assert expand(packed) == data
    assert codec.decoded_digest(io.BytesIO(packed)) == (
        len(data),
        xxhash.xxh3_128_hexdigest(data),
    )
    return packed


# ---- the format ----------------------------------------------------------------------------


def test_header_then_the_first_record_verbatim() -> None:
    data = b'{"a": 1, "b": "x"}\n{"a": 2, "b": "y"}\n'
    packed = assert_round_trip(data)
    header, first, _ = packed.split(b"\n", 2)
    doc = json.loads(header)
    assert doc["format"] == "artifacts_tasks.jsonl-compact" and doc["version"] == 1
    assert doc["original_size"] == len(data)
    assert doc["original_xxh3_128"] == xxhash.xxh3_128_hexdigest(data)
    assert first == b'{"a": 1, "b": "x"}'
    assert codec.is_compacted(packed) and not codec.is_compacted(data)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\n",
        b"\n\n\n",
        b'{"a":1}',  # one line, no newline
        b'{"a":1}\n',
        b'{"a":1}\n{"a":2}',  # no final newline
        b'{"a":1}\r\n{"a":2}\r\n',  # CRLF
        b'{"a" :  1 ,"b":[ 1.0 ,1e3, -0, 1E+2 ]}\n{"b":[],"a":{}}\n',  # spacing, numbers
        b'{"k": "\\u03A3\\"\\\\\\/\\n"}\n{"k": "\xce\xa3"}\n',  # escapes, UTF-8
        b'{"unterminated": "abc\n{"x": 1}\n]]]{{{\n"\n',  # malformed lines
        b"\xff\xfe\x00garbage\x00\x01\n\x00\x01\x02\n",  # not UTF-8, NULs, slot bytes
        b"plain text, not json at all\n\tindented: yes\n",
        b'{"\\u0000":0,"a\x00b":1}\n{"a\x00b":2}\n',  # NUL inside keys
    ],
)
def test_edge_cases_come_back_byte_for_byte(data: bytes) -> None:
    assert_round_trip(data)


@given(st.lists(st.binary(max_size=60), max_size=40), st.booleans())
@settings(max_examples=300, deadline=None)
def test_any_bytes_come_back(lines: list[bytes], final_newline: bool) -> None:
    data = b"\n".join(line.replace(b"\n", b"") for line in lines)
    assert_round_trip(data + (b"\n" if final_newline else b""))


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.sampled_from(["pass", "fail", "\u03a3", "a\\b", '"q"']),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)


@given(
    st.lists(JSON_VALUES, min_size=1, max_size=30),
    st.sampled_from([None, 1, 2]),
    st.booleans(),
    st.sampled_from([b"\n", b"\r\n"]),
)
@settings(max_examples=200, deadline=None)
def test_json_lines_in_any_spelling_come_back(
    values: list[object], indent: int | None, ascii_only: bool, eol: bytes
) -> None:
    lines = [
        json.dumps(v, ensure_ascii=ascii_only, separators=(", ", ": ") if indent else (",", ":"))
        for v in values
    ]
    assert_round_trip(eol.join(line.encode("utf-8", "surrogatepass") for line in lines) + eol)


def test_small_blocks_stream_and_join_exactly() -> None:
    lines = [json.dumps({"i": i, "s": "x" * (i % 7)}).encode() for i in range(500)]
    data = b"\n".join(lines) + b"\n"
    packed = assert_round_trip(data, block_bytes=256)  # many blocks
    body = packed.split(b"\n", 2)[2]
    chunks = 0
    while body:
        n = int.from_bytes(body[:4], "big")
        body = body[4 + n :]
        chunks += 1
    assert chunks > 10
    assert packed.count(b"(\xb5/\xfd") == 1  # one zstd frame: its window spans the blocks


def test_a_line_with_more_than_65536_values_comes_back() -> None:
    line = json.dumps(list(range(70_000))).encode()
    assert_round_trip(b'{"a": 1}\n' + line + b"\n" + line + b"\n")


@pytest.mark.parametrize("level", [1, 3, 19])
def test_the_level_is_a_parameter(level: int) -> None:
    data = b"".join(json.dumps({"n": i, "t": "abc"}).encode() + b"\n" for i in range(2000))
    packed = assert_round_trip(data, level=level)
    assert json.loads(packed.split(b"\n", 1)[0])["zstd_level"] == level


# ---- damage is an error, never wrong bytes -------------------------------------------------


def test_truncated_or_corrupt_files_raise_codec_error() -> None:
    data = b"".join(json.dumps({"n": i, "v": [i, i * 2]}).encode() + b"\n" for i in range(3000))
    packed = compact(data, block_bytes=4096)
    for cut in (len(packed) - 1, len(packed) - 10, len(packed) // 2):
        with pytest.raises(codec.CodecError):
            expand(packed[:cut])
    broken = bytearray(packed)
    broken[len(broken) // 2] ^= 0xFF
    with pytest.raises(codec.CodecError):
        expand(bytes(broken))
    with pytest.raises(codec.CodecError):
        expand(b'{"format":"artifacts_tasks.jsonl-compact","version":9}\n{}\n')
    with pytest.raises(codec.CodecError):
        expand(b'{"a": 1}\n{"a": 2}\n')  # not compacted at all


# ---- real data ---------------------------------------------------------------------------


@needs_corpora
@pytest.mark.parametrize(
    "path",
    sorted((CORPORA / "jsontestsuite" / "test_parsing").glob("*.json"))
    + sorted((CORPORA / "jsontestsuite" / "test_transform").glob("*.json")),
    ids=lambda p: p.name,
)
def test_every_jsontestsuite_file_as_a_line_comes_back(path: Path) -> None:
    raw = path.read_bytes()
    assert_round_trip(b'{"first": true}\n' + raw + b"\n" + raw)


@needs_corpora
def test_the_whole_jsontestsuite_as_one_file_comes_back() -> None:
    files = sorted((CORPORA / "jsontestsuite").rglob("*.json"))
    assert len(files) > 300
    assert_round_trip(b"\n".join(p.read_bytes().replace(b"\n", b" ") for p in files) + b"\n")


@needs_corpora
@pytest.mark.skipif(shutil.which("zstd") is None, reason="the zstd command is not installed")
@pytest.mark.parametrize("path", sorted((CORPORA / "jsonl").glob("*")), ids=lambda p: p.name[:24])
def test_real_jsonl_comes_back_and_beats_zstd_19_from_100_kb(path: Path) -> None:
    data = path.read_bytes()
    packed = assert_round_trip(data)
    if len(data) >= 100 * 1024:  # the default min_size_kb: smaller files are left alone
        zstd19 = subprocess.run(
            ["zstd", "-19", "-c", str(path)], capture_output=True, check=True
        ).stdout
        assert len(packed) <= len(zstd19), f"{len(packed)} > zstd -19's {len(zstd19)}"
