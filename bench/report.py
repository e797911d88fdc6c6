"""Report a saved benchmark run: Markdown tables with the ratios to the peers and the targets
(PASS/MISS), and two plots.

Usage: ``python bench/report.py [path/to/NNNN_name.json]`` (default: the newest saved run
under the project's ``.benchmarks/``). Writes ``bench/results.md`` (also printed),
``bench/throughput_vs_agents.png`` (group ``scaling``) and ``bench/latency_percentiles.png``
(the ``hop`` and ``request`` groups). A ratio is the peer's time per message over the
engine's, both medians from the same run (peers that run a prefix of the messages are
compared per message). The targets are reported here, never asserted by the tests: absolute
times on a shared machine are noise.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
THROUGHPUT_GROUPS = ("step", "drain", "send", "handler", "timers", "request")
ENGINES = ("native", "python")
PEERS = ("transitions", "automat")
TARGETS = {  # group: (minimum x transitions, minimum x automat), for the native hot path
    "drain": (80.0, 15.0),
    "send": (20.0, 4.0),
    "handler": (25.0, 5.0),
}
SCALING_TARGET = 0.5  # throughput at the largest population / at the smallest, native
MEMORY_TARGET = 128.0  # bytes per idle agent, native
MEMORY_TARGET_SIZES = (100_000, 1_000_000)

Bench = dict[str, Any]


def newest() -> Path:
    runs = sorted((ROOT / ".benchmarks").glob("*/*.json"), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise SystemExit(f"no saved benchmark run under {ROOT / '.benchmarks'} (`make bench`)")
    return runs[-1]


def system(b: Bench) -> str:
    """``native``, ``python``, ``transitions``, ``automat`` (or the name, if none fits)."""
    found = b["extra_info"].get("system") or b["extra_info"].get("peer")
    if found:
        return str(found)
    for name in PEERS + ENGINES:
        if name in b["name"]:
            return name
    return str(b["name"])


def median(b: Bench | None) -> float:
    return float(b["stats"]["median"]) if b else math.nan


def per_message(b: Bench | None) -> float:
    """Median seconds per message (``extra_info["messages"]``, else the whole run)."""
    if not b:
        return math.nan
    return median(b) / max(1, int(b["extra_info"].get("messages", 1)))


def ratio_text(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:,.1f}x"


def throughput(benchmarks: list[Bench]) -> dict[tuple[str, str], Bench]:
    """Print one table per group; return the benchmarks by (group, system)."""
    found: dict[tuple[str, str], Bench] = {}
    for group in THROUGHPUT_GROUPS:
        rows = [b for b in benchmarks if b["group"] == group]
        if not rows:
            continue
        by_system = {system(b): b for b in rows}
        found.update({(group, s): b for s, b in by_system.items()})
        print(f"### {group}\n")
        print("| system | messages | median s | ns/message | messages/s | "
              "native is faster by | twin is faster by |")
        print("|---|---:|---:|---:|---:|---|---|")
        for b in sorted(rows, key=per_message):
            t = per_message(b)
            name = system(b)
            vs = []
            for engine_name in ENGINES:
                ours = per_message(by_system.get(engine_name))
                vs.append("" if name in ENGINES else ratio_text(t / ours))
            print(
                f"| {name} | {b['extra_info'].get('messages', 0):,} | {median(b):.4f} | "
                f"{t * 1e9:,.0f} | {1 / t:,.0f} | {vs[0]} | {vs[1]} |"
            )
        print()
    return found


def memory(benchmarks: list[Bench]) -> dict[tuple[str, int], float]:
    """Print the idle-memory table; return bytes per agent by (system, agents)."""
    rows = [b for b in benchmarks if b["group"] == "memory"]
    figures = {
        (system(b), int(b["extra_info"]["agents"])): float(b["extra_info"]["bytes_per_agent"])
        for b in rows
    }
    if figures:
        print("### memory (idle agents, RSS growth in a fresh process)\n")
        print("| system | agents | bytes/agent |")
        print("|---|---:|---:|")
        for (name, n), value in sorted(figures.items()):
            print(f"| {name} | {n:,} | {value:,.1f} |")
        print()
    return figures


def targets(found: dict[tuple[str, str], Bench], figures: dict[tuple[str, int], float]) -> None:
    print("### targets (same run)\n")
    print("| target | measure | required | measured | |")
    print("|---|---|---:|---:|---|")
    for group, minimums in TARGETS.items():
        ours = found.get((group, "native"))
        for peer, minimum in zip(PEERS, minimums, strict=True):
            ratio = per_message(found.get((group, peer))) / per_message(ours)
            verdict = (
                "not measured" if math.isnan(ratio) else "PASS" if ratio >= minimum else "MISS"
            )
            print(
                f"| {group}, native | x {peer} | ≥ {minimum:.0f}x | {ratio_text(ratio)} | "
                f"{verdict} |"
            )
    for n in MEMORY_TARGET_SIZES:
        value = figures.get(("native", n))
        measured, verdict = "n/a", "not measured"
        if value is not None:
            measured, verdict = f"{value:.1f} B", "PASS" if value <= MEMORY_TARGET else "MISS"
        print(
            f"| idle memory, native | bytes/agent at {n:,} agents | ≤ {MEMORY_TARGET:.0f} B | "
            f"{measured} | {verdict} |"
        )


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else newest()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        report(path)
    (HERE / "results.md").write_text(out.getvalue())
    print(out.getvalue(), end="")
    for name in ("results.md", "throughput_vs_agents.png", "latency_percentiles.png"):
        if (HERE / name).exists():
            print(f"wrote {HERE / name}")


def report(path: Path) -> None:
    data: dict[str, Any] = json.loads(path.read_text())
    benchmarks: list[Bench] = data["benchmarks"]
    cpu = data.get("machine_info", {}).get("cpu", {}).get("brand_raw", "?")
    commit = data.get("commit_info", {})
    dirty = " (dirty)" if commit.get("dirty") else ""
    print(
        f"Benchmark run {path}\n{data.get('datetime', '?')}, {cpu}, "
        f"commit {str(commit.get('id', '?'))[:10]}{dirty}\n"
    )
    found = throughput(benchmarks)
    figures = memory(benchmarks)
    for group in ("hop", "request"):
        latency_rows(benchmarks, group)
    curve = scaling(benchmarks)
    targets(found, figures)
    scaling_target(curve)
    trio_targets({b["name"]: b for b in benchmarks})
    metrics_targets({b["name"]: b for b in benchmarks})
    record_targets({b["name"]: b for b in benchmarks})
    tenant_targets({b["name"]: b for b in benchmarks})
    realistic_targets(benchmarks)
    store_targets(benchmarks)
    log_targets(benchmarks)
    hibernate_targets(benchmarks)
    for b in benchmarks:
        if b["group"] == "upgrade":
            info = b["extra_info"]
            print(f"| upgrade of {info['agents']:,} agents ({info['implementation']}) | seconds | "
                  f"(reported) | {median(b):.2f} | |")
    print()
    plot_scaling(curve, HERE / "throughput_vs_agents.png")
    plot_latency(benchmarks, HERE / "latency_percentiles.png")


QUANTILES = ("p50", "p90", "p99", "p99.9")


def latency_rows(benchmarks: list[Bench], group: str) -> None:
    rows = [b for b in benchmarks if b["group"] == group and "p50_us" in b["extra_info"]]
    if not rows:
        return
    print(f"### {group}\n")
    print("| benchmark | system | " + " | ".join(f"{q} µs" for q in QUANTILES) + " | samples |")
    print("|---|---|" + "---:|" * (len(QUANTILES) + 1))
    for b in sorted(rows, key=lambda b: b["extra_info"].get("p50_us", 0)):
        info = b["extra_info"]
        cells = " | ".join(
            f"{info[f'{q}_us']:.2f}" if f"{q}_us" in info else "n/a" for q in QUANTILES
        )
        print(f"| {b['name']} | {system(b)} | {cells} | {info['samples']:,} |")
    print()


def scaling(benchmarks: list[Bench]) -> dict[str, dict[int, float]]:
    """Print messages/s against population; return it by hot path and agent count."""
    curve: dict[str, dict[int, float]] = {}
    for b in benchmarks:
        if b["group"] == "scaling":
            info = b["extra_info"]
            curve.setdefault(info["impl"], {})[int(info["agents"])] = (
                info["messages"] / float(b["stats"]["min"])
            )
    if curve:
        print("### scaling (best round, steady batches of 4096 random messages)\n")
        print("| hot path | agents | messages/s | vs smallest population |")
        print("|---|---:|---:|---:|")
        for impl, points in sorted(curve.items()):
            base = points[min(points)]
            for n, rate in sorted(points.items()):
                print(f"| {impl} | {n:,} | {rate:,.0f} | {rate / base:.2f} |")
        print()
    return curve


def scaling_target(curve: dict[str, dict[int, float]]) -> None:
    points = curve.get("native")
    if not points or len(points) < 2:
        return
    small, large = min(points), max(points)
    ratio = points[large] / points[small]
    print(
        f"| throughput at {large:,} agents, native | vs {small:,} agents | "
        f"≥ {SCALING_TARGET:.0%} | {ratio:.0%} | {'PASS' if ratio >= SCALING_TARGET else 'MISS'} |"
    )


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_scaling(curve: dict[str, dict[int, float]], path: Path) -> None:
    if not curve:
        return
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for impl, points in sorted(curve.items()):
        xs = sorted(points)
        ax.plot(xs, [points[x] for x in xs], marker="o", label=f"{impl} hot path")
        if impl == "native":
            ax.axhline(points[xs[0]] * SCALING_TARGET, color="grey", linestyle="--",
                       label="half the native throughput at the smallest population")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("agents")
    ax.set_ylabel("messages / s (send + drain)")
    ax.set_title("Throughput against population (uniformly random targets)")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_latency(benchmarks: list[Bench], path: Path) -> None:
    rows = [b for b in benchmarks
            if b["group"] in ("hop", "request") and "p50_us" in b["extra_info"]]
    if not rows:
        return
    plt = _pyplot()
    rows.sort(key=lambda b: (b["group"], b["extra_info"]["p50_us"]))
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.5), dpi=110)
    labels = [f"{b['group']}: {b['name'].removeprefix('test_')}" for b in rows]
    for i, q in enumerate(QUANTILES):
        values = [b["extra_info"].get(f"{q}_us", math.nan) for b in rows]
        ax.scatter(values, range(len(rows)), label=q, zorder=3, marker="o|sD"[i])
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("microseconds (log)")
    ax.set_title("Latency percentiles: agent-to-agent hop and request round trip")
    ax.grid(alpha=0.3, axis="x", which="both")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def drain_time(b: Bench) -> float:
    """Send + drain seconds (set-up and trio start-up excluded), or the whole round's median
    for runs saved before drain times were recorded."""
    return float(b["extra_info"].get("drain_median_s", b["stats"]["median"]))


def trio_targets(by_name: dict[str, Any]) -> None:
    """The trio runtime's targets, from the hop, request and trio-throughput groups."""
    hop = by_name.get("test_engine_hop[native-prebuilt]")
    if hop:
        p99 = hop["extra_info"]["p99_us"]
        print(
            f"| agent-to-agent hop (Send), native | p99 | < 2 µs | {p99:.2f} µs | "
            f"{'PASS' if p99 < 2 else 'MISS'} |"
        )
    ours, peer = (
        by_name.get("test_engine_request[native]"),
        by_name.get("test_peer_channel_roundtrip"),
    )
    if ours and peer:
        a, b = ours["extra_info"]["p50_us"], peer["extra_info"]["p50_us"]
        print(
            f"| request round trip, native | p50 vs channel round trip {b:.1f} µs | ≤ 1x | "
            f"{a:.1f} µs ({a / b:.2f}x) | {'PASS' if a <= b else 'MISS'} |"
        )
    sync = by_name.get("test_table_throughput_under_trio[native-sync]")
    under = by_name.get("test_table_throughput_under_trio[native-open_runtime]")
    sub = by_name.get("test_table_throughput_under_trio[native-open_runtime+subscriber]")
    if sync and under:  # send + drain time only (set-up and trio start-up excluded)
        ratio = drain_time(sync) / drain_time(under)
        print(
            f"| table workload under open_runtime, native | throughput vs run_until_idle | "
            f"≥ 80% | {ratio:.0%} | {'PASS' if ratio >= 0.8 else 'MISS'} |"
        )
    if under and sub:
        cost = drain_time(sub) / drain_time(under) - 1
        print(
            f"| recording with a subscriber attached, native | extra time | (reported) | "
            f"{cost:+.0%} | |"
        )


def metrics_targets(by_name: dict[str, Any]) -> None:
    """The cost of metrics, from the interleaved, paired measurement."""
    found = by_name.get("test_metrics_overhead_interleaved[native]")
    if not found:
        return
    info = found["extra_info"]
    for mode in ("metrics", "metrics+sample/64", "metrics+sample/1024", "sample/64", "sample/1024"):
        cost = info.get(f"overhead_{mode}")
        if cost is not None:
            print(
                f"| {mode}, native ({info['rounds']} paired rounds) | extra time | < 5% | "
                f"{cost:+.1%} | {'PASS' if cost < 0.05 else 'MISS'} |"
            )


def record_targets(by_name: dict[str, Any]) -> None:
    """Following the record stream: a reader of batches against nobody subscribed."""
    found = by_name.get("test_subscriber_overhead_interleaved[native]")
    if not found:
        return
    info = found["extra_info"]
    ratio = info["ratio_columns"]
    print(
        f"| a subscriber reading every record as columns, native ({info['rounds']} paired "
        f"rounds) | time until it has them all | ≤ 1.25x | {ratio:.2f}x | "
        f"{'PASS' if ratio <= 1.25 else 'MISS'} |"
    )
    if "ratio_batch" in info:
        print(
            f"| a subscriber reading Transition objects, native | same | (reported) | "
            f"{info['ratio_batch']:.1f}x | |"
        )


def tenant_targets(by_name: dict[str, Any]) -> None:
    """Tenants: the cost of the fair loop (interleaved, paired), fairness, a flood."""
    found = by_name.get("test_tenancy_overhead_interleaved[native]")
    if found:
        info = found["extra_info"]
        for mode, bound in (("one tenant", 0.03), ("ten tenants", 0.10)):
            cost = info[f"overhead_{mode}"]
            print(
                f"| {mode} vs no tenancy, native ({info['rounds']} paired rounds) | extra "
                f"time | ≤ {bound:.0%} | {cost:+.1%} | {'PASS' if cost <= bound else 'MISS'} |"
            )
    found = by_name.get("test_weighted_shares[native]")
    if found:
        error = found["extra_info"]["fairness_error"]
        print(
            f"| shares of tenants weighted 1:2:3, native | largest relative error | ≤ 5% | "
            f"{error:.2%} | {'PASS' if error <= 0.05 else 'MISS'} |"
        )
    found = by_name.get("test_quiet_tenant_under_a_flood[native]")
    if found:
        info = found["extra_info"]
        print(
            f"| quiet tenant under a flood, native | time in mailbox p50 / p99 (alone) | "
            f"(reported) | {info['quiet_wait_p50_us']:.1f} / {info['quiet_wait_p99_us']:.1f} µs "
            f"({info['alone_wait_p50_us']:.1f} / {info['alone_wait_p99_us']:.1f} µs); a round "
            f"{info['round_us']:.1f} µs | |"
        )


REALISTIC_TARGETS = (
    # (what, numerator contender, denominator contender, required ratio, at most/at least)
    ("send_many of lists, total", "native/lists", "native/ints", 2.0, "≤"),
    ("payload run vs no-payload run", "native/run-payload", "native/run-bare", 1.5, "≤"),
    ("send_many of lists vs hand-written runtime", "handwritten", "native/lists", 10.0, "≥"),
    ("send_many of lists vs automat", "automat", "native/lists", 15.0, "≥"),
    ("send_nowait loop vs hand-written runtime", "handwritten", "native/nowait", 3.0, "≥"),
)


def realistic_targets(benchmarks: list[Bench]) -> None:
    """Group ``realistic``: time per message of every contender, and the targets as ratios
    of two contenders' medians per message in this run."""
    rows = [b for b in benchmarks if b["group"] == "realistic"]
    if not rows:
        return
    by: dict[str, Bench] = {}
    for b in rows:
        mode = b["extra_info"].get("mode")
        by[f"{system(b)}/{mode}" if mode else system(b)] = b
    for what, top, bottom, required, sense in REALISTIC_TARGETS:
        ratio = per_message(by.get(top)) / per_message(by.get(bottom))
        ok = ratio <= required if sense == "≤" else ratio >= required
        verdict = "not measured" if math.isnan(ratio) else "PASS" if ok else "MISS"
        print(
            f"| realistic: {what} | {top} / {bottom} per message | {sense} {required:g}x | "
            f"{ratio_text(ratio)} | {verdict} |"
        )
    print("\n### realistic workload (ns per message)\n")
    print("| contender | ns/message | x native/lists |")
    print("|---|---:|---:|")
    base = per_message(by.get("native/lists"))
    for name, b in sorted(by.items(), key=lambda kv: per_message(kv[1])):
        ns = per_message(b) * 1e9
        print(f"| {name} | {ns:,.0f} | {ratio_text(per_message(b) / base)} |")


def store_targets(benchmarks: list[Bench]) -> None:
    """Group ``store``: snapshot (save) and restore (load) rates of idle agents against raw
    SQLite rows of the same size, as a share of the raw rate (target: ≥ 30 %)."""
    by = {b["extra_info"].get("mode"): b for b in benchmarks if b["group"] == "store"}
    for ours, raw, what in (("save", "insert", "snapshot"), ("load", "select", "restore")):
        share = per_message(by.get(raw)) / per_message(by.get(ours))
        verdict = "not measured" if math.isnan(share) else "PASS" if share >= 0.3 else "MISS"
        agents = by[ours]["extra_info"]["agents"] if ours in by else 0
        rate = 1 / per_message(by.get(ours)) if ours in by else math.nan
        print(
            f"| {what} of {agents:,} idle agents on SQLite ({rate:,.0f}/s) | share of raw "
            f"{raw} rate | ≥ 30% | {share:.0%} | {verdict} |"
        )


def log_targets(benchmarks: list[Bench]) -> None:
    """Groups ``log`` (messages/s of the table workload under durability "log" as a share of
    raw inserts of the same messages into the same database: target ≥ 50 %) and
    ``checkpoint`` (per-step durable commits against LangGraph's SqliteSaver: ≥ 100x)."""
    log = [b for b in benchmarks if b["group"] == "log"]

    def rate(b: Bench) -> float:
        return b["extra_info"]["messages"] / median(b)

    for database in ("sqlite", "postgres"):
        raw = [b for b in log if b["extra_info"].get("durability") == "raw"
               and b["extra_info"].get("database") == database]
        for b in log:
            info = b["extra_info"]
            if info.get("durability") != "log" or info.get("database") != database or not raw:
                continue
            share = rate(b) / rate(raw[0])
            print(
                f"| table workload under log on {database} (commit_interval "
                f"{info.get('commit_interval', 0):g} s, {rate(b):,.0f} msg/s) | share of raw "
                f"inserts ({rate(raw[0]):,.0f} msg/s) | ≥ 50% | {share:.0%} | "
                f"{'PASS' if share >= 0.5 else 'MISS'} |"
            )
    check = {b["extra_info"].get("system"): b for b in benchmarks if b["group"] == "checkpoint"}
    if "engine" in check and "langgraph" in check:
        ours, peer = (c["extra_info"]["steps"] / median(c) for c in
                      (check["engine"], check["langgraph"]))
        print(
            f"| per-step durable checkpoints ({ours:,.0f} steps/s) | x LangGraph SqliteSaver "
            f"({peer:,.0f} steps/s) | ≥ 100x | {ours / peer:.0f}x | "
            f"{'PASS' if ours / peer >= 100 else 'MISS'} |"
        )


def hibernate_targets(benchmarks: list[Bench]) -> None:
    """Group ``hibernate``: bytes per hibernated agent (target ≤ 32 B resident) and the wake
    latency on SQLite (target p99 ≤ 200 µs); the working-set throughput is reported."""
    by = {b["extra_info"].get("mode"): b["extra_info"] for b in benchmarks
          if b["group"] == "hibernate"}
    memory, wake = by.get("memory"), by.get("wake")
    if memory:
        kept = memory["python_bytes_per_agent"] + 28  # + the int id the registry keeps alive
        print(
            f"| memory of {memory['agents']:,} hibernated agents | bytes per agent: "
            f"bookkeeping + id (resident-set growth {memory['rss_bytes_per_agent']:.0f} B) | "
            f"≤ 32 B | {kept:.0f} B | {'PASS' if kept <= 32 else 'MISS'} |"
        )
    if wake:
        print(
            f"| wake of a hibernated agent on SQLite (p50 {wake['p50_us']:.0f} µs) | p99 | "
            f"≤ 200 µs | {wake['p99_us']:.0f} µs | {'PASS' if wake['p99_us'] <= 200 else 'MISS'} |"
        )
    for mode in ("working set (resident)", "working set (max_resident)"):
        if mode in by:
            info = by[mode]
            print(
                f"| {mode}: 1 % of {info['agents']:,} agents | messages/s | (reported) | "
                f"{info['messages_per_second']:,} | |"
            )


if __name__ == "__main__":
    main()
