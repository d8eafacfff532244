#!/usr/bin/env python3
"""Writes N create requests as JSON lines for `shortd import`.

usage: gen-links.py N [URL_BYTES] > links.jsonl
URLs are unique and about URL_BYTES long (default 60), like real targets.
"""
import sys

n = int(sys.argv[1])
size = int(sys.argv[2]) if len(sys.argv) > 2 else 60
out = sys.stdout
base = "https://www.example.com/articles/"
pad = max(0, size - len(base) - 12)
filler = ("x" * pad) + "/"
buf = []
for i in range(n):
    buf.append('{"url":"%s%s%d"}\n' % (base, filler, i))
    if len(buf) == 10000:
        out.write("".join(buf))
        buf.clear()
out.write("".join(buf))
