#!/usr/bin/env python3
"""Turns the wrk reports of loadtest/plot-connections.sh into a CSV and a PNG
of throughput and latency against the number of connections.

usage: plot-connections.py RAW_DIR OUT.csv OUT.png

RAW_DIR holds MODE-CONNS.txt (a `wrk --latency` report) and MODE-CONNS.meta
(`key=value` pairs: mode, connections, depth, cpu_ticks, clk_tck, seconds).
With pipelining, wrk records one latency per pipelined batch but corrects for
coordinated omission as if each response were a batch, so its percentiles
are not usable there (p90/p99 often print as 0.00us, written here as empty);
round_trip_mean_ms = connections x depth / (req/s) is the mean time a
connection waits for its batch (Little's law for a closed loop) and is what
the plot shows for pipelined runs.
"""
import csv
import glob
import os
import re
import subprocess
import sys

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    return float(m.group(1)) * UNITS[m.group(2)] if m else float("nan")


def parse(report):
    out = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", report)
    out["rps"] = float(m.group(1)) if m else float("nan")
    m = re.search(r"(\d+) requests in ([\d.]+\w+)", report)
    out["requests"] = int(m.group(1)) if m else 0
    m = re.search(r"^\s+Latency\s+(\S+)\s+(\S+)\s+(\S+)", report, re.M)
    out["avg_ms"], out["max_ms"] = (ms(m.group(1)), ms(m.group(3))) if m else (float("nan"),) * 2
    for pct in ("50", "75", "90", "99"):
        m = re.search(r"^\s+%s%%\s+(\S+)" % pct, report, re.M)
        out[f"p{pct}_ms"] = ms(m.group(1)) if m else float("nan")
    errs = []
    for pat in (r"Socket errors: [^\n]+", r"Non-2xx or 3xx responses: \d+"):
        errs += re.findall(pat, report)
    out["errors"] = "; ".join(errs)
    return out


def load(raw):
    rows = []
    for meta_path in glob.glob(os.path.join(raw, "*.meta")):
        meta = dict(kv.split("=", 1) for kv in open(meta_path).read().split())
        r = parse(open(meta_path[:-5] + ".txt").read())
        ticks, hz, secs = int(meta["cpu_ticks"]), int(meta["clk_tck"]), float(meta["seconds"])
        cpu_s = ticks / hz
        conns, depth = int(meta["connections"]), int(meta["depth"])

        def share(key):
            total = int(meta.get(key + "_total", 0))
            return round(int(meta[key + "_busy"]) / total, 3) if total else ""

        wrk_p = lambda v: round(v, 4) if v > 0 else ""  # wrk prints 0.00us when its histogram is broken
        rows.append({
            "mode": meta["mode"],
            "connections": int(meta["connections"]),
            "pipeline_depth": int(meta["depth"]),
            "seconds": secs,
            "requests_per_sec": round(r["rps"], 1),
            "latency_p50_ms": wrk_p(r["p50_ms"]),
            "latency_p99_ms": wrk_p(r["p99_ms"]),
            "latency_avg_ms": wrk_p(r["avg_ms"]),
            "latency_max_ms": wrk_p(r["max_ms"]),
            "round_trip_mean_ms": round(conns * depth / r["rps"] * 1e3, 4) if r["rps"] > 0 else "",
            "requests": r["requests"],
            "server_cpu_util": round(cpu_s / secs, 3),
            "server_cpu_us_per_req": round(cpu_s * 1e6 / r["requests"], 3) if r["requests"] else "",
            "cpu0_busy": share("cpu0"),
            "cpu1_busy": share("cpu1"),
            "errors": r["errors"],
        })
    rows.sort(key=lambda r: (r["mode"] != "keepalive", r["connections"]))
    return rows


def import_pyplot():
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        print("installing matplotlib (pip install --user) ...", file=sys.stderr)
        if subprocess.call([sys.executable, "-m", "pip", "install", "--quiet", "--user", "matplotlib"]) != 0:
            subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", "matplotlib"])
        import site

        site.addsitedir(site.getusersitepackages())
        importlib.invalidate_caches()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot(rows, out):
    plt = import_pyplot()
    from matplotlib.ticker import FuncFormatter

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(14, 5.5))
    styles = {"keepalive": ("tab:blue", "keep-alive"), "pipelined": ("tab:red", "pipelined")}
    for mode, (color, name) in styles.items():
        rs = [r for r in rows if r["mode"] == mode]
        if not rs:
            continue
        depth = rs[0]["pipeline_depth"]
        label = name if depth == 1 else f"{name} x{depth}"
        xs = [r["connections"] for r in rs]
        a1.plot(xs, [r["requests_per_sec"] / 1e3 for r in rs], marker="o", color=color, label=label)
        for r in rs:
            a1.annotate(f"{r['server_cpu_util'] * 100:.0f}%", (r["connections"], r["requests_per_sec"] / 1e3),
                        textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7, color=color)
        num = lambda v: v if v != "" else float("nan")
        if depth == 1:
            a2.plot(xs, [num(r["latency_p50_ms"]) for r in rs], marker="o", color=color, label=f"{label} p50 (wrk)")
            a2.plot(xs, [num(r["latency_p99_ms"]) for r in rs], marker="s", color=color, linestyle="--",
                    label=f"{label} p99 (wrk)")
        a2.plot(xs, [num(r["round_trip_mean_ms"]) for r in rs], marker="^", color=color, linestyle=":",
                label=f"{label} mean round trip (conns x depth / rate)")
    a1.set_title("Hot-key throughput (labels: shortd's share of CPU 0)")
    a1.set_ylabel("thousand requests/s")
    a1.set_ylim(bottom=0)
    a2.set_title("Latency (pipelined: wrk's percentiles are not usable, see the script)")
    a2.set_ylabel("ms (log)")
    a2.set_yscale("log")
    for a in (a1, a2):
        a.set_xscale("log")
        xs = sorted({r["connections"] for r in rows})
        a.set_xticks(xs)
        a.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:g}"))
        a.minorticks_off()
        a.set_xlabel("connections (log)")
        a.grid(True, alpha=0.3)
        a.legend(fontsize=8)
    fig.suptitle("shortd --workers 1 --durability never on CPU 0, one link; "
                 f"wrk -t1 on CPU 1, {rows[0]['seconds']:g} s per point", fontsize=11)
    fig.tight_layout()
    fig.savefig(out, dpi=90)


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    raw, out_csv, out_png = sys.argv[1:]
    rows = load(raw)
    if not rows:
        sys.exit(f"no wrk reports in {raw}")
    with open(out_csv, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    plot(rows, out_png)
    print(open(out_csv).read(), end="")
    print(f"wrote {out_csv} and {out_png}", file=sys.stderr)


if __name__ == "__main__":
    main()
