#!/usr/bin/env python3
"""Generates the benchmark tree, deterministically from a seed.

usage: gen_tree.py DIR SIZE_MB        make the tree (about SIZE_MB MiB)
       gen_tree.py --mutate DIR FRAC  overwrite FRAC of it in place

A third is text-like and compressible (log lines), a third random, a third
shaped like PostgreSQL relation files: 8 KiB pages with a page header, line
pointers, tuples at the end of the page and free space (zeros) between. The
mutation overwrites randomly placed 64 KiB runs (8 pages) with new data.
"""
import os
import random
import struct
import sys

MiB = 1 << 20
PAGE = 8192


def text_file(path, size, rng):
    words = [f"{w}{i}" for i, w in enumerate(
        "select insert update delete account branch teller history balance aid bid tid delta mtime filler "
        "checkpoint starting complete wrote buffers restartpoint transaction committed user postgres".split())]
    out, n = [], 0
    while n < size:
        line = "2026-11-%02d %02d:%02d:%02d.%03d UTC [%d] LOG:  %s\n" % (
            rng.randint(1, 28), rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59), rng.randint(0, 999),
            rng.randint(1000, 99999), " ".join(rng.choice(words) for _ in range(rng.randint(4, 14))))
        out.append(line)
        n += len(line)
    with open(path, "w") as f:
        f.write("".join(out)[:size])


def random_file(path, size, rng):
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 4 * MiB)
            f.write(rng.randbytes(n))
            left -= n


def page(rng, blkno):
    ntup = rng.randint(20, 60)
    tuples = []
    for i in range(ntup):
        body = struct.pack("<iiiq", blkno, i, rng.randint(0, 1 << 30), rng.randint(-10**9, 10**9))
        body += rng.choice([b"", b"x" * rng.randint(0, 40), rng.randbytes(rng.randint(0, 24))])
        tuples.append(b"\x00" * 23 + b"\x18" + body)
    used = sum(len(t) for t in tuples)
    while 24 + 4 * len(tuples) + used > PAGE:
        used -= len(tuples.pop())
    lower = 24 + 4 * len(tuples)
    upper = PAGE - used
    header = struct.pack("<QHHHHHHI", rng.getrandbits(40), 0, 0, lower, upper, PAGE, PAGE | 4, 0)
    lp = b"".join(struct.pack("<I", rng.getrandbits(32)) for _ in tuples)
    return header + lp + b"\x00" * (upper - lower) + b"".join(reversed(tuples))


def relation_file(path, size, rng):
    with open(path, "wb") as f:
        for blk in range(size // PAGE):
            f.write(page(rng, blk))


def generate(root, size_mb):
    rng = random.Random(20261122)
    third = size_mb * MiB // 3
    for kind, fn, per in (("log", text_file, 16 * MiB), ("blob", random_file, 32 * MiB),
                          ("base/16384", relation_file, 48 * MiB)):
        d = os.path.join(root, kind)
        os.makedirs(d, exist_ok=True)
        made, i = 0, 0
        while made < third:
            n = min(per, third - made)
            fn(os.path.join(d, str(16400 + i) if kind.startswith("base") else f"{kind}{i:03}"), n, rng)
            made += n
            i += 1


def mutate(root, frac):
    rng = random.Random(5)
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs)
    total = sum(os.path.getsize(f) for f in files)
    run = 8 * PAGE
    for _ in range(int(total * frac / run)):
        f = rng.choices(files, weights=[os.path.getsize(x) for x in files])[0]
        size = os.path.getsize(f)
        off = rng.randrange(0, max(1, size - run)) // PAGE * PAGE
        with open(f, "r+b") as h:
            h.seek(off)
            if "base" in f:
                h.write(b"".join(page(rng, off // PAGE + k) for k in range(8)))
            else:
                h.write(rng.randbytes(run))


if __name__ == "__main__":
    if sys.argv[1] == "--mutate":
        mutate(sys.argv[2], float(sys.argv[3]))
    else:
        generate(sys.argv[1], int(sys.argv[2]))
