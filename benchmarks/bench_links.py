"""How closely the emulated links follow their bandwidth and propagation: measured / ideal.

The tests only check that nothing arrives earlier than the link allows (that
holds under any load); how much later it arrives depends on the machine, so it
is measured here, side by side with the ideal, and printed as ratios.

Usage::

    python benchmarks/bench_links.py [--reps 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics

from earlyexit.runtime.link import time_through_links

# (name, hops [(Mb/s, propagation ms)], message bytes, MTU, ideal seconds)
CASES = [
    ("80 kB, 8 Mb/s + 20 ms", [(8.0, 20.0)], 80_000, 1500, 8 * 80_000 / 8e6 + 0.020),
    ("100 B, 1 Gb/s + 30 ms", [(1000.0, 30.0)], 100, 1500, 8 * 100 / 1e9 + 0.030),
    # two 8 Mb/s hops, 9000-byte fragments: the first fragment is stored and
    # forwarded at each hop, the rest stream behind it at the bottleneck rate
    ("90 kB, 2 hops of 8 Mb/s + 5 ms, MTU 9000", [(8.0, 5.0), (8.0, 5.0)], 90_000, 9000,
     8 * (90_000 + 9000) / 8e6 + 0.010),
]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5, help="messages per case (median)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    if args.reps < 1:
        parser.error("--reps must be >= 1")
    rows = []
    for name, hops, size, mtu, ideal in CASES:
        times = time_through_links(hops, [size] * args.reps, mtu)
        median = statistics.median(times)
        rows.append({"case": name, "ideal_s": ideal, "median_s": median,
                     "min_s": min(times), "ratio": median / ideal})  # fmt: skip
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'case':44s} {'ideal ms':>9s} {'median ms':>10s} {'min ms':>8s} {'ratio':>6s}")
    for r in rows:
        print(f"{r['case']:44s} {r['ideal_s'] * 1e3:9.1f} {r['median_s'] * 1e3:10.1f} "
              f"{r['min_s'] * 1e3:8.1f} {r['ratio']:6.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
