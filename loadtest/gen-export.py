#!/usr/bin/env python3
"""N links in shortd's export format (one JSON object a line), with 7-character codes."""
import random, sys
n = int(sys.argv[1]); rnd = random.Random(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
A = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
out = sys.stdout; seen = set(); buf = []
for i in range(n):
    while True:
        c = "".join(rnd.choice(A) for _ in range(7))
        if c not in seen: seen.add(c); break
    buf.append('{"code":"%s","url":"https://www.example.com/articles/%d/some-title-%d","created_at":"2026-11-30T12:00:00Z","expires_at":null,"max_clicks":null,"redirect":302,"clicks":%d,"disabled":false}\n' % (c, i, i * 7, i % 5))
    if len(buf) == 10000: out.write("".join(buf)); buf = []
out.write("".join(buf))
