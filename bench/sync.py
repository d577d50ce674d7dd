"""How fast does the agent program the kernel: a full sync of N Services x 10 endpoints, and one change?

Rules only (no pods): a network namespace of its own, the real `nft` and kernel, the agent's own
Syncer. In one run:
  full         desired state -> rendered fragments -> one transaction -> kernel, for each N
  nft only     the same full transaction text, prepared beforehand, loaded into a fresh table
               (the floor: what the kernel and nft cost without any of our Python)
  incremental  at the largest N, one endpoint of one random Service replaced, --changes times
  nft floor    an empty transaction (`nft -f` with one no-op): the fixed cost of one nft run
and prints times, the ratios full / nft-only and incremental / nft floor, and writes the plot of
sync time vs Service count to docs/sync-time.svg.

    .venv/bin/python bench/sync.py [--services 1000,2500,5000,10000] [--endpoints 10] [--changes 200]
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import random
import statistics
import subprocess
import time
from pathlib import Path

from portico.dataplane.model import Backend, Frontend, FrontendPolicy
from portico.dataplane.nft import Nft
from portico.dataplane.nftables import NODE, full_transaction, node_fragment, render_frontend
from portico.dataplane.syncer import Syncer

NETNS = "ptbench-sync"
VIPS = ipaddress.ip_network("198.19.0.0/16")  # inside the lab's ranges; nothing is sent anyway
PODS = ipaddress.ip_network("198.18.128.0/17")
PLOT = Path(__file__).resolve().parent.parent / "docs" / "sync-time.svg"


def desired(services: int, endpoints: int, seed: int = 1) -> dict[Frontend, FrontendPolicy]:
    rng = random.Random(seed)
    out = {}
    for i in range(services):
        backends = sorted({Backend(PODS[rng.randrange(1, PODS.num_addresses - 1)], 8080) for _ in range(endpoints)})
        out[Frontend(VIPS[i + 1], "tcp", 80)] = FrontendPolicy(f"bench/s{i}", tuple(backends))
    return out


async def full_sync(state: dict[Frontend, FrontendPolicy]) -> tuple[float, Syncer]:
    syncer = Syncer(Nft(netns=NETNS))
    await syncer.nft.delete_table()
    start = time.perf_counter()
    replacements: dict[object, object] = {fe: render_frontend(fe, p) for fe, p in state.items()}
    replacements[NODE] = node_fragment([ipaddress.ip_network("198.18.128.0/24")])
    result = await syncer.sync(replacements)  # type: ignore[arg-type]
    assert result.kind == "full"
    return time.perf_counter() - start, syncer


async def nft_only(syncer: Syncer) -> float:
    text = full_transaction(syncer.kernel.ruleset())
    await syncer.nft.delete_table()
    start = time.perf_counter()
    await syncer.nft.apply(text)
    return time.perf_counter() - start


async def nft_floor(nft: Nft, runs: int = 50) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        await nft.apply("add table inet portico\n")
        times.append(time.perf_counter() - start)
    return times


async def incremental(syncer: Syncer, state: dict[Frontend, FrontendPolicy], changes: int) -> list[float]:
    rng = random.Random(2)
    frontends = list(state)
    times = []
    for _ in range(changes):
        fe = rng.choice(frontends)
        policy = state[fe]
        backends = list(policy.backends)
        backends[rng.randrange(len(backends))] = Backend(PODS[rng.randrange(1, PODS.num_addresses - 1)], 8080)
        state[fe] = FrontendPolicy(policy.service, tuple(sorted(set(backends))))
        start = time.perf_counter()
        result = await syncer.sync({fe: render_frontend(fe, state[fe])})
        times.append(time.perf_counter() - start)
        assert result.kind == "partial", result
    return times


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def plot(points: list[tuple[int, float, float]], path: Path) -> None:
    """Sync time vs Service count (full sync and nft alone), as a small SVG."""
    width, height, margin = 560, 320, 50
    max_x = max(n for n, _, _ in points)
    max_y = max(full for _, full, _ in points) * 1.1

    def xy(n: int, t: float) -> str:
        x, y = margin + n / max_x * (width - 2 * margin), height - margin - t / max_y * (height - 2 * margin)
        return f"{x:.1f},{y:.1f}"

    lines = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
             'font-size="12">', '<rect width="100%" height="100%" fill="white"/>',
             f'<line x1="{margin}" y1="{height - margin}" x2="{width - margin}" y2="{height - margin}" '
             'stroke="black"/>',
             f'<line x1="{margin}" y1="{margin}" x2="{margin}" y2="{height - margin}" stroke="black"/>',
             f'<text x="{width / 2}" y="{height - 12}" text-anchor="middle">Services (x 10 endpoints)</text>',
             f'<text x="14" y="{height / 2}" transform="rotate(-90 14 {height / 2})" text-anchor="middle">'
             'seconds</text>']
    for series, colour, label in ((1, "#1f77b4", "full sync (agent)"), (2, "#ff7f0e", "nft alone (same text)")):
        coords = " ".join(xy(p[0], p[series]) for p in points)
        lines.append(f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="2"/>')
        lines += [f'<circle cx="{xy(p[0], p[series]).split(",")[0]}" cy="{xy(p[0], p[series]).split(",")[1]}" '
                  f'r="3" fill="{colour}"/>' for p in points]
        lines.append(f'<text x="{margin + 10}" y="{margin + 15 * series}" fill="{colour}">{label}</text>')
    for n, _, _ in points:
        x = xy(n, 0).split(",")[0]
        lines.append(f'<text x="{x}" y="{height - margin + 15}" text-anchor="middle">{n}</text>')
    for i in range(5):
        t = max_y * i / 4
        y = xy(0, t).split(",")[1]
        lines.append(f'<text x="{margin - 5}" y="{y}" text-anchor="end">{t:.2f}</text>')
    lines.append("</svg>")
    path.write_text("\n".join(lines) + "\n")


async def run(args: argparse.Namespace) -> None:
    floor = statistics.median(await nft_floor(Nft(netns=NETNS)))
    points = []
    print(f"{'services':>9} {'endpoints':>9} {'full sync':>10} {'nft alone':>10} {'ratio':>6}")
    for n in args.services:
        state = desired(n, args.endpoints)
        full, syncer = await full_sync(state)
        alone = await nft_only(syncer)  # leaves the same table, so the last syncer goes on incrementally
        points.append((n, full, alone))
        print(f"{n:>9} {n * args.endpoints:>9} {full:>9.2f}s {alone:>9.2f}s {full / alone:>5.2f}x")
    times = await incremental(syncer, state, args.changes)
    p50, p99 = percentile(times, 50), percentile(times, 99)
    print(f"\nnft floor (empty transaction): {floor * 1000:.1f} ms")
    print(f"incremental, one endpoint of one of {args.services[-1]} Services, {args.changes} changes: "
          f"p50 {p50 * 1000:.1f} ms ({p50 / floor:.2f}x floor), p99 {p99 * 1000:.1f} ms ({p99 / floor:.2f}x floor)")
    largest = points[-1]
    print(f"\ngoals: full sync of {largest[0]} x {args.endpoints} < 3 s: {largest[1]:.2f} s "
          f"({'met' if largest[1] < 3 else 'NOT met'}); incremental p99 < 50 ms: {p99 * 1000:.1f} ms "
          f"({'met' if p99 < 0.05 else 'NOT met'})")
    plot(points, args.plot)
    print(f"plot: {args.plot}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=lambda s: [int(x) for x in s.split(",")], default=[1000, 2500, 5000, 10000])
    parser.add_argument("--endpoints", type=int, default=10)
    parser.add_argument("--changes", type=int, default=200)
    parser.add_argument("--plot", type=Path, default=PLOT)
    args = parser.parse_args()
    subprocess.run(["ip", "netns", "del", NETNS], capture_output=True, check=False)
    subprocess.run(["ip", "netns", "add", NETNS], check=True)
    try:
        asyncio.run(run(args))
    finally:
        subprocess.run(["ip", "netns", "del", NETNS], capture_output=True, check=False)


if __name__ == "__main__":
    main()
