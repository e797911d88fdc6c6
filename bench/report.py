"""Print the ratios of a saved benchmark run to its peers, and the targets, as Markdown.

Usage: ``python bench/report.py [path/to/NNNN_name.json]`` (default: the newest saved run
under .benchmarks/). Ratios are peer median / engine median from the same run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

TARGETS = [  # (group, engine benchmark, peer benchmark, minimum ratio)
    ("table", "test_engine_send_many[native]", "test_peer_transitions", 80),
    ("table", "test_engine_send_many[native]", "test_peer_automat", 15),
    ("table", "test_engine_send_nowait[native]", "test_peer_transitions", 20),
    ("table", "test_engine_send_nowait[native]", "test_peer_automat", 4),
    ("handler", "test_engine_handler[native]", "test_peer_transitions_handler", 25),
    ("handler", "test_engine_handler[native]", "test_peer_automat_handler", 5),
]
PEERS = {
    "table": ("test_peer_transitions", "test_peer_automat"),
    "handler": ("test_peer_transitions_handler", "test_peer_automat_handler"),
}
MEMORY_TARGET = 128.0


def newest() -> Path:
    runs = sorted(Path(".benchmarks").glob("*/*.json"), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise SystemExit("no saved benchmark run under .benchmarks/ (run `make bench`)")
    return runs[-1]


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else newest()
    data: dict[str, Any] = json.loads(path.read_text())
    by_name = {b["name"]: b for b in data["benchmarks"]}
    print(f"Benchmark run {path} ({data['machine_info'].get('cpu', {}).get('brand_raw', '?')})\n")
    for group, (transitions, automat) in PEERS.items():
        rows = [b for b in data["benchmarks"] if b["group"] == group]
        if not rows:
            continue
        print(f"### {group}\n")
        print("| benchmark | median s | messages/s | x transitions | x automat |")
        print("|---|---:|---:|---:|---:|")
        for b in sorted(rows, key=lambda b: b["stats"]["median"]):
            med = b["stats"]["median"]
            rate = b["extra_info"].get("messages", 0) / med
            ratios = [
                by_name[p]["stats"]["median"] / med if p in by_name else float("nan")
                for p in (transitions, automat)
            ]
            print(f"| {b['name']} | {med:.4f} | {rate:,.0f} | {ratios[0]:.1f} | {ratios[1]:.1f} |")
        print()
    for group in ("hop", "request"):
        latency_rows(data, group)
    print()
    print("### targets (same run)\n")
    print("| engine | peer | target | measured | |")
    print("|---|---|---:|---:|---|")
    for _, ours, peer, target in TARGETS:
        if ours in by_name and peer in by_name:
            ratio = by_name[peer]["stats"]["median"] / by_name[ours]["stats"]["median"]
            verdict = "PASS" if ratio >= target else "MISS"
            print(f"| {ours} | {peer} | ≥ {target}x | {ratio:.1f}x | {verdict} |")
    memory = [b for b in data["benchmarks"] if b["group"] == "memory"]
    for b in sorted(memory, key=lambda b: (b["extra_info"]["peer"], b["extra_info"]["agents"])):
        info = b["extra_info"]
        verdict = ""
        if info["peer"] == "native":
            verdict = "PASS" if info["bytes_per_agent"] <= MEMORY_TARGET else "MISS"
        target = f"≤ {MEMORY_TARGET:.0f} B" if info["peer"] == "native" else ""
        print(
            f"| idle memory {info['peer']} | {info['agents']:,} agents | {target} | "
            f"{info['bytes_per_agent']:.0f} B/agent | {verdict} |"
        )
    trio_targets(by_name)


def latency_rows(data: dict[str, Any], group: str) -> None:
    rows = [b for b in data["benchmarks"] if b["group"] == group]
    if not rows:
        return
    print(f"\n### {group}\n")
    print("| benchmark | p50 µs | p99 µs | samples |")
    print("|---|---:|---:|---:|")
    for b in sorted(rows, key=lambda b: b["extra_info"].get("p50_us", 0)):
        info = b["extra_info"]
        print(
            f"| {b['name']} | {info['p50_us']:.2f} | {info['p99_us']:.2f} | {info['samples']:,} |"
        )


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
        ratio = sync["extra_info"]["drain_median_s"] / under["extra_info"]["drain_median_s"]
        print(
            f"| table workload under open_runtime, native | throughput vs run_until_idle | "
            f"≥ 80% | {ratio:.0%} | {'PASS' if ratio >= 0.8 else 'MISS'} |"
        )
    if under and sub:
        cost = sub["extra_info"]["drain_median_s"] / under["extra_info"]["drain_median_s"] - 1
        print(
            f"| recording with a subscriber attached, native | extra time | (reported) | "
            f"{cost:+.0%} | |"
        )


if __name__ == "__main__":
    main()
