"""JSONL compaction (DESIGN §10): smaller than `zstd -19` on the real corpora, streaming.

    python bench/bench_compact.py [--corpora ../shared/corpora/jsonl] [--level 19]

Per corpus file, in the same run: the original size; `gzip -6` and `zstd -19` of the
file (the command-line tools, single thread); our compacted file (header and verbatim
first record included); compaction and decoding (`cat`) speed in MB/s of original bytes;
the peak resident memory of a process that does only the compaction, and of one that does
only the decoding (the streaming bound: one 4 MiB block, not the file).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

WORKER = r"""
import resource, sys, time, xxhash
from artifacts_tasks import jsonl_codec
mode, src, dst, level = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
t = time.perf_counter()
if mode == "encode":
    data_size = 0
    h = xxhash.xxh3_128()
    with open(src, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            data_size += len(chunk)
    with open(src, "rb") as f, open(dst, "wb") as out:
        jsonl_codec.encode(f, out, original_size=data_size,
                           original_xxh3_128=h.hexdigest(), level=level)
else:
    with open(src, "rb") as f, open(dst, "wb") as out:
        for chunk in jsonl_codec.decode(f):
            out.write(chunk)
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def size_of(cmd: list[str], path: Path) -> int:
    return len(subprocess.run([*cmd, str(path)], capture_output=True, check=True).stdout)


def run(mode: str, src: Path, dst: Path, level: int) -> tuple[float, int]:
    out = subprocess.run(
        [sys.executable, "-c", WORKER, mode, str(src), str(dst), str(level)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return float(out[0]), int(out[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", type=Path, default=REPO.parent / "shared/corpora/jsonl")
    parser.add_argument("--level", type=int, default=19)
    args = parser.parse_args()
    rows = []
    print(
        "| file | size | gzip -6 | zstd -19 | ours | ours / zstd -19 | compact MB/s | "
        "cat MB/s | peak RSS compact / cat |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for path in sorted(args.corpora.iterdir()):
            size = path.stat().st_size
            packed, back = Path(tmp) / "packed", Path(tmp) / "back"
            t_enc, rss_enc = run("encode", path, packed, args.level)
            t_dec, rss_dec = run("decode", packed, back, args.level)
            assert back.read_bytes() == path.read_bytes(), path
            row = {
                "file": path.name,
                "size": size,
                "gzip_6": size_of(["gzip", "-6", "-c"], path),
                "zstd_19": size_of(["zstd", "-19", "-c", "-q"], path),
                "ours": packed.stat().st_size,
                "compact_mb_s": size / t_enc / 1e6,
                "cat_mb_s": size / t_dec / 1e6,
                "rss_compact_mib": rss_enc / 1024,
                "rss_cat_mib": rss_dec / 1024,
            }
            rows.append(row)
            print(
                f"| {row['file'][:32]} | {size:,} | {row['gzip_6']:,} | {row['zstd_19']:,} | "
                f"{row['ours']:,} | {row['ours'] / row['zstd_19']:.3f} | "
                f"{row['compact_mb_s']:.1f} | {row['cat_mb_s']:.1f} | "
                f"{row['rss_compact_mib']:.0f} / {row['rss_cat_mib']:.0f} MiB |"
            )
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "compact.json").write_text(json.dumps({"level": args.level, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
