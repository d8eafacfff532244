#!/usr/bin/env python3
"""Scrapes a running shortd's /metrics once a second and plots the panels of
docs/grafana-dashboard.json as one PNG.

usage: plot-metrics.py BASE_URL SECONDS [-o OUT.png] [--title TEXT] [--csv OUT.csv]

Starts nothing: point it at a server that is already up (loadtest/dashboard.sh
does that). Every value is per scrape interval (about one second), computed
from the difference between two consecutive scrapes: rates from counters,
quantiles from the cumulative histogram buckets of that interval, the way
Prometheus' histogram_quantile interpolates inside a bucket. An interval in
which a histogram got no samples leaves a gap.
"""
import argparse
import csv
import math
import re
import subprocess
import sys
import time
import urllib.request


def ensure_matplotlib():
    """Installs matplotlib when it is missing (without importing it: that
    takes a second or two, which would delay the first scrape)."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        print("installing matplotlib (pip install --user) ...", file=sys.stderr)
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--user", "matplotlib"]
        if subprocess.call(cmd) != 0:
            # Inside a virtualenv --user is refused; install into it instead.
            subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", "matplotlib"])
        import importlib
        import site

        site.addsitedir(site.getusersitepackages())
        importlib.invalidate_caches()


def import_matplotlib():
    ensure_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text):
    """Prometheus text exposition -> {(name, ((label, value), ...)): float}."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        if not m:
            continue
        labels = tuple(sorted(LABEL.findall(m.group(2) or "")))
        try:
            out[(m.group(1), labels)] = float(m.group(3))
        except ValueError:
            pass
    return out


def scrape(base, seconds):
    """[(seconds since the first scrape, samples)], one scrape a second."""
    url = base.rstrip("/") + "/metrics"
    scrapes = []
    start = time.monotonic()
    n = int(seconds) + 1
    failures = 0
    for i in range(n):
        delay = start + i - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        t = time.monotonic()
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                body = r.read().decode()
        except OSError as e:
            failures += 1
            print(f"scrape {i} failed: {e}", file=sys.stderr)
            continue
        scrapes.append((t - start, parse(body)))
    if failures:
        print(f"{failures} of {n} scrapes failed", file=sys.stderr)
    return scrapes


# ---- series arithmetic over consecutive scrapes -----------------------------

def total(samples, name, **match):
    """Sum of every series NAME whose labels include MATCH (value or callable)."""
    s, seen = 0.0, False
    for (n, labels), v in samples.items():
        if n != name:
            continue
        d = dict(labels)
        if all((f(d.get(k)) if callable(f) else d.get(k) == f) for k, f in match.items()):
            s += v
            seen = True
    return s if seen else None


def series_keys(scrapes, name, by):
    keys = set()
    for _, s in scrapes:
        for (n, labels), _v in s.items():
            if n == name:
                d = dict(labels)
                keys.add(tuple(d.get(k, "") for k in by))
    return sorted(keys)


def delta(a, b):
    if a is None or b is None:
        return None
    return b - a if b >= a else b  # a counter reset starts again from 0


def rates(scrapes, name, **match):
    """(times, per-second rates) of a counter, one point per interval."""
    ts, vs = [], []
    for (t0, s0), (t1, s1) in zip(scrapes, scrapes[1:]):
        d = delta(total(s0, name, **match), total(s1, name, **match))
        ts.append(t1)
        vs.append(d / (t1 - t0) if d is not None else math.nan)
    return ts, vs


def gauge(scrapes, name, **match):
    ts, vs = [], []
    for t, s in scrapes[1:]:
        v = total(s, name, **match)
        ts.append(t)
        vs.append(math.nan if v is None else v)
    return ts, vs


def buckets(samples, name):
    """{le: cumulative count} of an unlabelled histogram."""
    out = {}
    for (n, labels), v in samples.items():
        if n == name + "_bucket":
            d = dict(labels)
            out[float(d["le"])] = v  # float("+Inf") is inf
    return out


def quantile(q, cum):
    """histogram_quantile over [(upper bound, cumulative count)] sorted by bound."""
    if not cum or cum[-1][1] <= 0:
        return math.nan
    rank = q * cum[-1][1]
    prev_le, prev_c = 0.0, 0.0
    for i, (le, c) in enumerate(cum):
        if c >= rank:
            if math.isinf(le):
                # Prometheus answers the highest finite bound.
                return cum[i - 1][0] if i > 0 else math.nan
            if c == prev_c:
                return le
            return prev_le + (le - prev_le) * (rank - prev_c) / (c - prev_c)
        prev_le, prev_c = le, c
    return math.nan


def interval_quantiles(scrapes, name, qs):
    """(times, {q: values}, counts): quantiles of each interval's new samples."""
    ts, out, counts = [], {q: [] for q in qs}, []
    for (_t0, s0), (t1, s1) in zip(scrapes, scrapes[1:]):
        b0, b1 = buckets(s0, name), buckets(s1, name)
        cum = sorted((le, (b1[le] - b0.get(le, 0.0)) if b1[le] >= b0.get(le, 0.0) else b1[le]) for le in b1)
        ts.append(t1)
        counts.append(cum[-1][1] if cum else 0.0)
        for q in qs:
            out[q].append(quantile(q, cum))
    return ts, out, counts


def interval_mean(scrapes, name):
    ts, vs = [], []
    for (_t0, s0), (t1, s1) in zip(scrapes, scrapes[1:]):
        ds = delta(total(s0, name + "_sum"), total(s1, name + "_sum"))
        dc = delta(total(s0, name + "_count"), total(s1, name + "_count"))
        ts.append(t1)
        vs.append(ds / dc if ds is not None and dc else math.nan)
    return ts, vs


def present(scrapes, name):
    return any(n == name for _, s in scrapes for (n, _l) in s)


# ---- plotting ---------------------------------------------------------------

def finite(vs):
    return [v for v in vs if v is not None and not math.isnan(v)]


def note_missing(ax, names):
    ax.text(0.5, 0.5, "not exported:\n" + "\n".join(names), transform=ax.transAxes, ha="center", va="center",
            fontsize=9, color="firebrick")


def draw(scrapes, out, title):
    plt = import_matplotlib()
    from matplotlib.ticker import FuncFormatter, PercentFormatter

    fig, axes = plt.subplots(4, 3, figsize=(18, 17))
    fig.suptitle(title, fontsize=14)
    rows = {}

    def twin(ax, color="tab:gray"):
        a = ax.twinx()
        a.tick_params(axis="y", colors=color)
        return a

    # 1. redirect throughput by status
    ax = axes[0][0]
    ax.set_title("Redirect throughput by status")
    for (status,) in series_keys(scrapes, "shortd_http_requests_total", ["status"]):
        ts, vs = rates(scrapes, "shortd_http_requests_total", route="redirect", status=status)
        if finite(vs) and max(finite(vs)) > 0:
            ax.plot(ts, vs, label=status)
            rows[f"redirect {status} req/s"] = (ts, vs)
    ax.set_ylabel("requests/s (log)")
    ax.set_yscale("symlog", linthresh=1)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower center", fontsize=8)
    else:
        note_missing(ax, ['shortd_http_requests_total{route="redirect"}'])

    # 2. API requests by route and status
    ax = axes[0][1]
    ax.set_title("API requests by route and status")
    for route, status in series_keys(scrapes, "shortd_http_requests_total", ["route", "status"]):
        if route == "redirect":
            continue
        ts, vs = rates(scrapes, "shortd_http_requests_total", route=route, status=status)
        if not any(v > 0 for v in finite(vs)):
            continue  # answered before the window only (e.g. the set-up requests)
        ax.plot(ts, vs, label=f"{route} {status}")
        rows[f"api {route} {status} req/s"] = (ts, vs)
    ax.set_ylabel("requests/s (log)")
    ax.set_yscale("symlog", linthresh=1)
    ax.legend(loc="upper right", fontsize=8)

    # 3. redirect latency quantiles
    ax = axes[0][2]
    ax.set_title("Redirect latency (per-interval quantiles)")
    name = "shortd_redirect_duration_seconds"
    if present(scrapes, name + "_bucket"):
        ts, qv, _ = interval_quantiles(scrapes, name, [0.5, 0.99, 0.999])
        for q, label in [(0.5, "p50"), (0.99, "p99"), (0.999, "p99.9")]:
            vs = [v * 1e6 for v in qv[q]]
            ax.plot(ts, vs, label=label, marker=".", markersize=3)
            rows[f"redirect {label} us"] = (ts, vs)
        ax.set_yscale("log")
        lowest = min(le for le in buckets(scrapes[-1][1], name)) * 1e6
        ax.axhline(lowest, color="gray", linewidth=0.8, linestyle=":")
        ax.annotate(f"lowest bucket bound ({lowest:g} µs): a quantile below it is interpolated from 0",
                    (0.01, lowest), xycoords=("axes fraction", "data"), xytext=(0, 3), textcoords="offset points",
                    fontsize=7, color="gray")
        ax.legend(fontsize=8, loc="upper right")
    else:
        note_missing(ax, [name])
    ax.set_ylabel("µs (log)")

    # 4. clicks and creates
    ax = axes[1][0]
    ax.set_title("Clicks and creates per second")
    ts, vs = rates(scrapes, "shortd_clicks_total")
    ax.plot(ts, vs, label="clicks/s", color="tab:blue")
    rows["clicks/s"] = (ts, vs)
    ax.set_ylabel("clicks/s", color="tab:blue")
    a2 = twin(ax, "tab:orange")
    ts, vs = rates(scrapes, "shortd_links_created_total")
    a2.plot(ts, vs, label="links created/s", color="tab:orange")
    rows["links created/s"] = (ts, vs)
    a2.set_ylabel("links created/s", color="tab:orange")

    # 5. cache hit ratio
    ax = axes[1][1]
    ax.set_title("Cache hit ratio")
    _, hits = rates(scrapes, "shortd_cache_hits_total")
    ts, misses = rates(scrapes, "shortd_cache_misses_total")
    ratio = [h / (h + m) if (h + m) > 0 else math.nan for h, m in zip(hits, misses)]
    ax.plot(ts, ratio, color="tab:green")
    rows["cache hit ratio"] = (ts, ratio)
    lo = min(finite(ratio) or [0.0])
    ax.set_ylim(max(0.0, lo - 0.05), 1.005)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))

    # 6. cache size
    ax = axes[1][2]
    ax.set_title("Cache size")
    ts, vs = gauge(scrapes, "shortd_cache_entries")
    ax.plot(ts, vs, color="tab:blue")
    rows["cache entries"] = (ts, vs)
    ax.set_ylabel("entries", color="tab:blue")
    a2 = twin(ax, "tab:orange")
    ts, vs = gauge(scrapes, "shortd_cache_bytes")
    a2.plot(ts, [v / 1024 for v in vs], color="tab:orange", linestyle="--")
    rows["cache bytes"] = (ts, vs)
    a2.set_ylabel("KiB", color="tab:orange")
    for a in (ax, a2):
        top = max([v for line in a.get_lines() for v in finite(list(line.get_ydata()))] or [1.0])
        a.set_ylim(0, top * 1.15)

    # 7. coalesced waits and evictions
    ax = axes[2][0]
    ax.set_title("Cache coalesced waits and evictions")
    for name, label in [("shortd_cache_coalesced_waits_total", "coalesced waits/s"),
                        ("shortd_cache_evictions_total", "evictions/s")]:
        ts, vs = rates(scrapes, name)
        ax.plot(ts, vs, label=label)
        rows[label] = (ts, vs)
    ax.set_ylabel("per second")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)

    # 8. fsync latency
    ax = axes[2][1]
    ax.set_title("fsync latency (per-interval quantiles)")
    name = "shortd_store_fsync_duration_seconds"
    if present(scrapes, name + "_bucket"):
        ts, qv, counts = interval_quantiles(scrapes, name, [0.5, 0.99, 0.999])
        for q, label in [(0.5, "p50"), (0.99, "p99"), (0.999, "p99.9")]:
            vs = [v * 1e3 for v in qv[q]]
            ax.plot(ts, vs, label=label, marker=".", markersize=3)
            rows[f"fsync {label} ms"] = (ts, vs)
        ax.set_yscale("log")
        ax.legend(loc="upper left", fontsize=8)
        a2 = twin(ax)
        ts2, fs = rates(scrapes, name + "_count")
        a2.plot(ts2, fs, color="tab:gray", linewidth=0.8, linestyle=":")
        a2.set_ylabel("fsyncs/s (dotted)", color="tab:gray")
        a2.set_ylim(bottom=0)
        rows["fsyncs/s"] = (ts2, fs)
    else:
        note_missing(ax, [name])
    ax.set_ylabel("ms (log)")

    # 9. commit batch size
    ax = axes[2][2]
    ax.set_title("Group commit batch size")
    name = "shortd_store_commit_batch_size"
    if present(scrapes, name + "_bucket"):
        ts, qv, _ = interval_quantiles(scrapes, name, [0.5, 0.99])
        _, mean = interval_mean(scrapes, name)
        ax.plot(ts, mean, label="mean")
        ax.plot(ts, qv[0.5], label="p50", linestyle="--")
        ax.plot(ts, qv[0.99], label="p99", linestyle=":")
        rows["batch mean"] = (ts, mean)
        rows["batch p99"] = (ts, qv[0.99])
        ax.legend(loc="upper left", fontsize=8)
        a2 = twin(ax)
        ts2, cs = rates(scrapes, "shortd_store_commits_total")
        a2.plot(ts2, cs, color="tab:gray", linewidth=0.8)
        a2.set_ylabel("commits/s (gray)", color="tab:gray")
        a2.set_ylim(bottom=0)
        rows["commits/s"] = (ts2, cs)
    else:
        note_missing(ax, [name])
    ax.set_ylabel("requests per commit")
    ax.set_ylim(bottom=0)

    # 10. appended bytes
    ax = axes[3][0]
    ax.set_title("Log appends")
    ts, vs = rates(scrapes, "shortd_store_appended_bytes_total")
    ax.plot(ts, [v / 1024 for v in vs])
    rows["appended B/s"] = (ts, vs)
    ax.set_ylabel("KiB/s")
    ax.set_ylim(bottom=0)

    # 11. links and segments
    ax = axes[3][1]
    ax.set_title("Links and segments")
    ts, vs = gauge(scrapes, "shortd_links")
    ax.plot(ts, vs, color="tab:blue")
    rows["links"] = (ts, vs)
    ax.set_ylabel("links", color="tab:blue")
    a2 = twin(ax, "tab:orange")
    if present(scrapes, "shortd_store_segments"):
        ts, vs = gauge(scrapes, "shortd_store_segments")
        a2.step(ts, vs, where="post", color="tab:orange")
        rows["segments"] = (ts, vs)
        a2.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:.0f}"))
    else:
        note_missing(a2, ["shortd_store_segments"])
    a2.set_ylabel("segments", color="tab:orange")

    # 12. snapshot and compaction durations
    ax = axes[3][2]
    ax.set_title("Snapshot and compaction durations")
    missing = []
    for name, label, mk in [("shortd_store_snapshot_duration_seconds", "snapshot", "o"),
                            ("shortd_store_compaction_duration_seconds", "compaction step", "s")]:
        if not present(scrapes, name + "_count"):
            missing.append(name)
            continue
        ts, vs = interval_mean(scrapes, name)
        n = (total(scrapes[-1][1], name + "_count") or 0) - (total(scrapes[0][1], name + "_count") or 0)
        ax.plot(ts, [v * 1e3 for v in vs], linestyle="none", marker=mk, label=f"{label} (mean per interval; {n:.0f} in run)")
        rows[f"{label} ms"] = (ts, [v * 1e3 for v in vs])
    if missing:
        note_missing(ax, missing)
    if len(missing) < 2:
        ax.legend(fontsize=8)
        ax.set_yscale("log")
    ax.set_ylabel("ms (log)")

    for a in axes.flat:
        a.set_xlabel("seconds")
        a.grid(True, alpha=0.3)
        a.set_xlim(0, scrapes[-1][0] if scrapes else 1)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(out, dpi=80)
    return rows


def summarize(rows):
    print(f"{'series':32} {'mean':>12} {'min':>12} {'max':>12}")
    for k, (_ts, vs) in rows.items():
        f = finite(vs)
        if f:
            print(f"{k:32} {sum(f) / len(f):12.4g} {min(f):12.4g} {max(f):12.4g}")
        else:
            print(f"{k:32} {'(no data)':>12}")


def write_csv(path, rows):
    times = sorted({round(t, 3) for ts, _ in rows.values() for t in ts})
    cols = list(rows)
    index = {k: {round(t, 3): v for t, v in zip(*rows[k])} for k in cols}
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["t_seconds"] + cols)
        for t in times:
            w.writerow([t] + ["" if (v := index[k].get(t)) is None or math.isnan(v) else f"{v:.6g}" for k in cols])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("base_url", help="e.g. http://127.0.0.1:8080")
    p.add_argument("seconds", type=float, help="how long to scrape (one scrape a second)")
    p.add_argument("-o", "--out", default="metrics.png")
    p.add_argument("--title", default=None)
    p.add_argument("--csv", default=None, help="also write the per-interval series here")
    a = p.parse_args()
    ensure_matplotlib()  # install before the run, not after it
    scrapes = scrape(a.base_url, a.seconds)
    if len(scrapes) < 2:
        sys.exit("fewer than two scrapes succeeded; nothing to plot")
    rows = draw(scrapes, a.out, a.title or f"shortd /metrics at {a.base_url}, one scrape a second")
    if a.csv:
        write_csv(a.csv, rows)
    summarize(rows)
    print(f"wrote {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
