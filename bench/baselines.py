"""Baselines the scan budgets are measured against (run as whole processes by bench_scan.py).

python bench/baselines.py walk DIR   # bare os.scandir walk with lstat of every file
python bench/baselines.py hash DIR   # the same walk, hashing every file with xxh3-128
"""

from __future__ import annotations

import os
import sys

import xxhash


def walk(path: str, *, hash_files: bool) -> int:
    count = 0
    with os.scandir(path) as it:
        for de in it:
            if de.is_dir(follow_symlinks=False):
                count += walk(de.path, hash_files=hash_files)
            else:
                de.stat(follow_symlinks=False)
                if hash_files:
                    with open(de.path, "rb") as f:
                        xxhash.xxh3_128_hexdigest(f.read())
                count += 1
    return count


if __name__ == "__main__":
    mode, root = sys.argv[1], sys.argv[2]
    print(walk(root, hash_files=mode == "hash"))
