"""Print a saved benchmark run as Markdown: one table per group, the ratios to the peers, the
idle-memory figures, and the targets with PASS/MISS.

Usage: ``python bench/report.py [path/to/NNNN_name.json]`` (default: the newest saved run
under the project's ``.benchmarks/``). A ratio is peer median / engine median, both from the
same run. The targets are reported here, never asserted by the tests: absolute times on a
shared machine are noise.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
THROUGHPUT_GROUPS = ("send_many", "send_nowait", "handler")
ENGINES = ("native", "python")
PEERS = ("transitions", "automat")
TARGETS = {  # group: (minimum x transitions, minimum x automat), for the native hot path
    "send_many": (80.0, 15.0),
    "send_nowait": (20.0, 4.0),
    "handler": (25.0, 5.0),
}
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


def ratio_text(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:,.1f}x"


def throughput(benchmarks: list[Bench]) -> dict[tuple[str, str], Bench]:
    """Print one table per throughput group; return the benchmarks by (group, system)."""
    found: dict[tuple[str, str], Bench] = {}
    for group in THROUGHPUT_GROUPS:
        rows = [b for b in benchmarks if b["group"] == group]
        if not rows:
            continue
        by_system = {system(b): b for b in rows}
        found.update({(group, s): b for s, b in by_system.items()})
        peer_medians = [median(by_system.get(p)) for p in PEERS]
        print(f"### {group}\n")
        print("| benchmark | system | rounds | median s | messages/s | x transitions | x automat |")
        print("|---|---|---:|---:|---:|---:|---:|")
        for b in sorted(rows, key=median):
            med = median(b)
            rate = b["extra_info"].get("messages", 0) / med
            ratios = [ratio_text(p / med) for p in peer_medians]
            print(
                f"| {b['name']} | {system(b)} | {b['stats']['rounds']} | {med:.4f} | "
                f"{rate:,.0f} | {ratios[0]} | {ratios[1]} |"
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
            ratio = median(found.get((group, peer))) / median(ours)
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
    targets(found, figures)
    trio_targets({b["name"]: b for b in benchmarks})
    metrics_targets({b["name"]: b for b in benchmarks})


def latency_rows(benchmarks: list[Bench], group: str) -> None:
    rows = [b for b in benchmarks if b["group"] == group]
    if not rows:
        return
    print(f"### {group}\n")
    print("| benchmark | p50 µs | p99 µs | samples |")
    print("|---|---:|---:|---:|")
    for b in sorted(rows, key=lambda b: b["extra_info"].get("p50_us", 0)):
        info = b["extra_info"]
        print(
            f"| {b['name']} | {info['p50_us']:.2f} | {info['p99_us']:.2f} | {info['samples']:,} |"
        )
    print()


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
    for mode in ("metrics", "metrics+sample/64", "metrics+sample/1024"):
        cost = info.get(f"overhead_{mode}")
        if cost is not None:
            print(
                f"| {mode}, native ({info['rounds']} paired rounds) | extra time | < 5% | "
                f"{cost:+.1%} | {'PASS' if cost < 0.05 else 'MISS'} |"
            )


if __name__ == "__main__":
    main()
