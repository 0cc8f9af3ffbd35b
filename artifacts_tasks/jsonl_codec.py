"""A byte-exact JSONL codec: record templates and value columns under zstd.

A compacted file keeps its name and reads, in order (docs/compaction.md has the details
a decoder needs):

1. a header line: a JSON object starting `{"format":"artifacts_tasks.jsonl-compact",`
   with the version, the original's size and xxh3-128, the codec parameters;
2. the original's first line, verbatim, with its newline (schema preservation: `head -2`
   still shows a record);
3. one zstd stream in chunks, each a 4-byte big-endian length and the bytes zstd gave up
   to a block flush: chunk by chunk it decompresses to one block's payload, which decodes
   to the next of the original's lines; an empty payload (the frame's end) closes it.
   One stream, not a frame a block: zstd's window (8 MiB at level 19) reaches back
   across blocks, as it would over the plain file.

Each line is split into a *template* — everything outside string and bare-value tokens,
plus object keys — and its *values*. Templates repeat (a JSONL file's records mostly share
a shape), so a block stores each once and a template index per line; values go to columns
by the text just before them (their key), so similar values sit together where zstd finds
them. A line that is no JSON at all still splits into some template and values, and still
joins back to the same bytes: the split loses nothing by construction, whatever the input
(odd whitespace, `\\u03A3` escapes, `1e3`, CRLF, empty or malformed lines, non-UTF-8).

Every block is encoded three ways (columns by key, columns by template slot, the lines
as they are) and the smallest is kept. Memory is bounded by one block (`block_bytes` of
input, 4 MiB by default) and its token lists, about 10× that at worst, never by the file.
"""

from __future__ import annotations

import json
import os
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import xxhash

FORMAT = "artifacts_tasks.jsonl-compact"
VERSION = 1
MAGIC = b'{"format":"' + FORMAT.encode() + b'",'
CODEC = "templates+columns+zstd"
BLOCK_BYTES = 4 << 20
HEADER_LIMIT = 64 << 10  # a header line longer than this is not ours
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

# A string ("..." with escapes, on one line) or a bare token (number, true, false, null,
# or anything else that is not structure or whitespace). Whatever neither matches —
# whitespace, `{}[]:,`, a lone quote — stays in the template. `\x00` never does (it is a
# bare token), so it can separate a template's pieces.
_TOKEN = re.compile(rb'("(?:[^"\\\n]|\\.)*")|([^\s{}\[\]:,"]+)')
_KEY_FOLLOWS = re.compile(rb"\s*:")
_SLOT = b"\x00"
_CONTEXT = 24  # bytes of template before a value that name its column

MODE_KEYS, MODE_SLOTS, MODE_LINES, MODE_KEYS_DICT = 0, 1, 2, 3
_RANKING_LEVEL = 3  # candidates are compared at this level, the winner kept at the real one


class CodecError(Exception):
    """A compacted file that cannot be decoded (truncated, corrupt, or not ours)."""


@dataclass(frozen=True)
class Header:
    original_size: int
    original_xxh3_128: str
    zstd_level: int
    status: str | None  # the original's status, as the scan read it before compaction

    def to_line(self) -> bytes:
        doc = {
            "format": FORMAT,
            "version": VERSION,
            "codec": CODEC,
            "original_size": self.original_size,
            "original_xxh3_128": self.original_xxh3_128,
            "zstd_level": self.zstd_level,
            "status": self.status,
        }
        return json.dumps(doc, separators=(",", ":")).encode("ascii") + b"\n"

    @classmethod
    def parse(cls, line: bytes) -> Header:
        try:
            doc = json.loads(line)
            if doc["format"] != FORMAT or doc["version"] != VERSION or doc["codec"] != CODEC:
                raise CodecError(f"unknown format or version: {doc.get('version')!r}")
            status = doc.get("status")
            if status not in (None, "pass", "fail", "unknown"):
                raise CodecError(f"its header's status is not a status: {status!r}")
            level = doc["zstd_level"]
            if not isinstance(level, int) or not 1 <= level <= 22:
                raise CodecError("its header's zstd level is not a level")
            digest = doc["original_xxh3_128"]
            if not (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{32}", digest)):
                raise CodecError("its header's checksum is not an xxh3-128")
            if not isinstance(doc["original_size"], int) or doc["original_size"] < 0:
                raise CodecError("its header's size is not a size")
            return cls(
                int(doc["original_size"]),
                str(doc["original_xxh3_128"]),
                int(doc["zstd_level"]),
                None if status is None else str(status),
            )
        except CodecError:
            raise
        except (
            ValueError,
            TypeError,
            KeyError,
            AttributeError,
            OverflowError,
            RecursionError,
        ) as exc:
            raise CodecError(f"its header is malformed ({exc})") from None


def is_compacted(head: bytes) -> bool:
    """Whether a file starting with these bytes claims to be compacted by this codec (a
    claim only: `compacted_header` checks it)."""
    return head.startswith(MAGIC)


def compacted_header(fd: int, size: int) -> Header | None:
    """The header of the file open at `fd` (`size` bytes) when it is a compacted file: its
    header parses and, after the verbatim first line, a zstd frame begins. A plain JSONL
    file whose first line merely looks like our header is not one."""
    head = os.pread(fd, HEADER_LIMIT, 0)
    if not is_compacted(head):
        return None
    line, newline, _ = head.partition(b"\n")
    if not newline:
        return None
    try:
        header = Header.parse(line)
    except CodecError:
        return None
    pos = len(line) + 1
    while True:  # line 2: the first record, verbatim
        piece = os.pread(fd, 1 << 16, pos)
        if not piece:
            return header if pos == size and header.original_size == size - len(line) - 1 else None
        cut = piece.find(b"\n")
        if cut >= 0:
            pos += cut + 1
            break
        pos += len(piece)
    # The body starts with a chunk length and a zstd frame's magic number: that, and not
    # the chunks reaching the end, tells ours. A compacted file cut short or damaged is
    # still one (and `cat` says it cannot be decoded); a plain file never starts so.
    first = os.pread(fd, 8, pos)
    return header if len(first) == 8 and first[4:] == ZSTD_MAGIC else None


# ---- encoding ----------------------------------------------------------------------------


def encode(
    src: BinaryIO,
    dst: BinaryIO,
    *,
    original_size: int,
    original_xxh3_128: str,
    level: int = 19,
    dict_threshold: int = 5,
    status: str | None = None,
    block_bytes: int = BLOCK_BYTES,
) -> None:
    """Write the compacted form of `src` (read from its start, streaming) to `dst`.

    `dict_threshold`: in the candidate that uses value dictionaries, a value repeated this
    often in its column goes to the column's dictionary.
    """
    import zstandard

    dst.write(Header(original_size, original_xxh3_128, level, status).to_line())
    first = src.readline()
    dst.write(first)
    if not first.endswith(b"\n"):
        return  # one line without a newline: nothing more to say
    # Parameters sized to the file (as `zstd -19 FILE` sizes them): a small file does not
    # pay for an 8 MiB window's tables.
    params = zstandard.ZstdCompressionParameters.from_level(
        level, source_size=original_size, write_checksum=1
    )
    stream = zstandard.ZstdCompressor(compression_params=params).compressobj()
    ranker = zstandard.ZstdCompressor(level=min(level, _RANKING_LEVEL))
    for lines in _blocks(src, block_bytes):
        candidates = list(_payloads(lines, dict_threshold))
        best = min(candidates, key=lambda payload: len(ranker.compress(payload)))
        chunk = stream.compress(best) + stream.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
        dst.write(struct.pack(">I", len(chunk)))
        dst.write(chunk)
    end = stream.flush()  # the frame's end and its checksum
    dst.write(struct.pack(">I", len(end)))
    dst.write(end)


def _blocks(src: BinaryIO, block_bytes: int) -> Iterator[list[bytes]]:
    """The rest of the file as lists of lines (split on \\n; the last may be partial or
    empty, so that b"\\n".join of all of them is exactly the rest)."""
    lines: list[bytes] = []
    size = 0
    pending: list[bytes] = []  # the pieces of a line longer than one read (joined once)
    while True:
        chunk = src.read(1 << 20)
        if not chunk:
            break
        parts = chunk.split(b"\n")
        if pending:
            parts[0] = b"".join([*pending, parts[0]])
            pending = []
        pending.append(parts.pop())
        for line in parts:
            lines.append(line)
            size += len(line) + 1
            if size >= block_bytes:
                yield lines
                lines, size = [], 0
    lines.append(b"".join(pending))
    yield lines


def _payloads(lines: list[bytes], dict_threshold: int) -> Iterator[bytes]:
    """The block's lines encoded each way the decoder knows; the caller keeps the smallest."""
    split = [_split(line) for line in lines]
    yield _columns(split, MODE_KEYS)
    yield _columns(split, MODE_SLOTS)
    yield _columns(split, MODE_KEYS_DICT, dict_threshold)
    yield bytes([MODE_LINES]) + _varint(len(lines)) + b"\n".join(lines)


def _split(line: bytes) -> tuple[bytes, list[bytes]]:
    """(template, values): the template's pieces joined by \\x00, one value per gap."""
    parts = _TOKEN.split(line)
    pieces = [parts[0]]
    values = []
    for i in range(1, len(parts), 3):
        string, bare, after = parts[i], parts[i + 1], parts[i + 2]
        if string is not None and _SLOT not in string and _KEY_FOLLOWS.match(after):
            pieces[-1] += string + after  # an object key: part of the record's shape
        else:
            values.append(string if string is not None else bare)
            pieces.append(after)
    return _SLOT.join(pieces), values


def _column_keys(template: bytes, tid: int, mode: int) -> list[bytes | tuple[int, int]]:
    """Which column each of a template's values goes to (the decoder computes the same)."""
    pieces = template.split(_SLOT)
    if mode == MODE_SLOTS:
        return [(tid, j) for j in range(len(pieces) - 1)]
    return [p[-_CONTEXT:] for p in pieces[:-1]]


def _columns(split: list[tuple[bytes, list[bytes]]], mode: int, dict_threshold: int = 0) -> bytes:
    templates: dict[bytes, int] = {}
    tids = bytearray()
    columns: dict[bytes | tuple[int, int], list[bytes]] = {}
    keys_of: list[list[bytes | tuple[int, int]]] = []
    for template, values in split:
        tid = templates.get(template)
        if tid is None:
            tid = templates[template] = len(templates)
            keys_of.append(_column_keys(template, tid, mode))
        tids += _varint(tid)
        for key, value in zip(keys_of[tid], values, strict=True):
            column = columns.get(key)
            if column is None:
                column = columns[key] = []
            column.append(value)
    out = bytearray([mode])
    out += _varint(len(split))
    out += _varint(len(templates))
    for template in templates:
        out += _varint(len(template))
        out += template
    out += tids
    for column in columns.values():
        if mode == MODE_KEYS_DICT:
            out += _with_dictionary(column, dict_threshold)
        else:
            data = b"\n".join(column)
            out += _varint(len(data))
            out += data
    return bytes(out)


def _with_dictionary(column: list[bytes], threshold: int) -> bytes:
    """A column as its dictionary (values repeated `threshold` times or more) and its
    values, each either `\x00<index>` or itself (`\x01`-prefixed if it starts so)."""
    counts: dict[bytes, int] = {}
    for value in column:
        counts[value] = counts.get(value, 0) + 1
    index = {v: b"\x00%d" % i for i, v in enumerate(v for v, n in counts.items() if n >= threshold)}
    dictionary = b"\n".join(index)
    data = b"\n".join(
        index.get(v) or (b"\x01" + v if v[:1] in (b"\x00", b"\x01") else v) for v in column
    )
    return _varint(len(index)) + _varint(len(dictionary)) + dictionary + _varint(len(data)) + data


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


# ---- decoding ----------------------------------------------------------------------------


def read_header(src: BinaryIO) -> Header:
    line = src.readline(HEADER_LIMIT)
    if not is_compacted(line) or not line.endswith(b"\n"):
        raise CodecError("it does not start with a compacted-JSONL header")
    return Header.parse(line)


def decode(src: BinaryIO) -> Iterator[bytes]:
    """The original bytes of a compacted file, in chunks (streaming: one block at a time).

    The last step checks the whole against the header's size and xxh3-128: damage the
    zstd checksums did not catch is a CodecError, never silently wrong bytes.
    """
    header = read_header(src)
    h = xxhash.xxh3_128()
    size = 0
    # No payload holds more than the original's lines and a varint each: a chunk that
    # inflates past that is hostile (a "zip bomb"), and stops before memory runs out.
    limit = min(11 * header.original_size + (1 << 20), 1 << 30)
    for chunk in _decode_body(src, limit):
        h.update(chunk)
        size += len(chunk)
        yield chunk
    if size != header.original_size or h.hexdigest() != header.original_xxh3_128:
        raise CodecError("what it decodes to differs from the original's size or checksum")


def decode_verified(src: BinaryIO) -> Iterator[bytes]:
    """`decode`, but only once the whole file has decoded to its recorded size and checksum:
    a damaged file yields no byte at all (CodecError), rather than wrong bytes first.
    Costs a second decode (fast: tens of MB/s); `src` must be seekable."""
    start = src.tell()
    for _ in decode(src):
        pass
    src.seek(start)
    yield from decode(src)


def _decode_body(src: BinaryIO, limit: int) -> Iterator[bytes]:
    import zstandard

    first = src.readline()
    yield first
    if not first.endswith(b"\n"):
        if src.read(1):
            raise CodecError("bytes after a last line that had no newline")
        return
    stream = zstandard.ZstdDecompressor().decompressobj()
    started = False
    while True:
        size = src.read(4)
        if len(size) < 4:
            raise CodecError("truncated: the stream ends before its last chunk")
        (n,) = struct.unpack(">I", size)
        chunk = src.read(n)
        if len(chunk) < n:
            raise CodecError("truncated chunk")
        parts = []
        total = 0
        try:
            for i in range(0, len(chunk), 1024):  # at most ~32 MiB out of 1 KiB in
                out = stream.decompress(chunk[i : i + 1024])
                total += len(out)
                if total > limit:
                    raise CodecError("a chunk inflates past what the original can hold")
                parts.append(out)
        except zstandard.ZstdError as exc:
            raise CodecError(f"a chunk does not decompress ({exc})") from None
        payload = b"".join(parts)
        if not payload:
            break  # the frame's end: nothing may follow
        lines = _decode_block(payload)
        if started:
            yield b"\n"
        started = True
        yield b"\n".join(lines)
    if not started or not stream.eof or src.read(1):
        raise CodecError("the stream does not end where it should")


def _decode_block(payload: bytes) -> list[bytes]:
    try:
        mode = payload[0]
        pos = 1
        n_lines, pos = _read_varint(payload, pos)
        if mode == MODE_LINES:
            lines = payload[pos:].split(b"\n")
            if len(lines) != n_lines:
                raise CodecError("a block's line count disagrees with its lines")
            return lines
        if mode not in (MODE_KEYS, MODE_SLOTS, MODE_KEYS_DICT):
            raise CodecError(f"unknown block mode {mode}")
        n_templates, pos = _read_varint(payload, pos)
        templates = []
        for _ in range(n_templates):
            size, pos = _read_varint(payload, pos)
            templates.append(payload[pos : pos + size])
            pos += size
        tids = []
        for _ in range(n_lines):
            tid, pos = _read_varint(payload, pos)
            tids.append(tid)
        # Columns in order of first use, exactly as the encoder made them.
        keys_of = [
            _column_keys(t, i, MODE_KEYS if mode == MODE_KEYS_DICT else mode)
            for i, t in enumerate(templates)
        ]
        order: dict[bytes | tuple[int, int], int] = {}
        for tid in tids:
            for key in keys_of[tid]:
                order.setdefault(key, len(order))
        columns: list[Iterator[bytes]] = []
        for _ in order:
            dictionary: list[bytes] | None = None
            if mode == MODE_KEYS_DICT:
                n_dict, pos = _read_varint(payload, pos)
                size, pos = _read_varint(payload, pos)
                dictionary = payload[pos : pos + size].split(b"\n") if n_dict else []
                if len(dictionary) != n_dict:
                    raise CodecError("a column's dictionary is corrupt")
                pos += size
            size, pos = _read_varint(payload, pos)
            values = payload[pos : pos + size].split(b"\n")
            pos += size
            if dictionary is not None:
                values = [_undict(v, dictionary) for v in values]
            columns.append(iter(values))
        if pos != len(payload):
            raise CodecError("a block has bytes left over")
        slots = [[columns[order[k]] for k in keys] for keys in keys_of]
        pieces = [t.split(_SLOT) for t in templates]
        lines = []
        for tid in tids:
            parts = pieces[tid]
            out = [parts[0]]
            for column, piece in zip(slots[tid], parts[1:], strict=True):
                out.append(next(column))
                out.append(piece)
            lines.append(b"".join(out))
        return lines
    except (IndexError, StopIteration, ValueError):
        raise CodecError("a block is corrupt") from None


def _undict(value: bytes, dictionary: list[bytes]) -> bytes:
    if value[:1] == b"\x00":
        return dictionary[int(value[1:])]
    return value[1:] if value[:1] == b"\x01" else value


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        n |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return n, pos
        shift += 7
        if shift > 63:
            raise CodecError("a number in a block is too long")


def decoded_digest(src: BinaryIO) -> tuple[int, str]:
    """(size, xxh3-128) of what `src` decodes to: the check before a compacted file
    replaces its original."""
    h = xxhash.xxh3_128()
    size = 0
    for chunk in decode(src):
        h.update(chunk)
        size += len(chunk)
    return size, str(h.hexdigest())
