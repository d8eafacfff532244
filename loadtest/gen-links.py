#!/usr/bin/env python3
"""Writes N create requests as JSON lines for `shortd import`.

usage: gen-links.py N [URL_BYTES] [ALIAS_PREFIX] > links.jsonl
URLs are unique and about URL_BYTES long (default 60), like real targets.
With ALIAS_PREFIX, link i gets the alias PREFIX{i}, so that load scripts can
name any link without a list of codes.
"""
import sys

n = int(sys.argv[1])
size = int(sys.argv[2]) if len(sys.argv) > 2 else 60
prefix = sys.argv[3] if len(sys.argv) > 3 else None
out = sys.stdout
base = "https://www.example.com/articles/"
pad = max(0, size - len(base) - 12)
filler = ("x" * pad) + "/"
buf = []
for i in range(n):
    if prefix:
        buf.append('{"url":"%s%s%d","alias":"%s%d"}\n' % (base, filler, i, prefix, i))
    else:
        buf.append('{"url":"%s%s%d"}\n' % (base, filler, i))
    if len(buf) == 10000:
        out.write("".join(buf))
        buf.clear()
out.write("".join(buf))
