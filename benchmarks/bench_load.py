"""Planning under load against planning without: the time ratio (issue 14 asks for <= 2x).

Run:  python benchmarks/bench_load.py            (N=12, 55 and 100)
      python benchmarks/bench_load.py --quick    (N=12 and 30)

Every figure is measured in this run on this machine (best of several process-CPU
times; the machine may be shared). For each case it prints today's P_lat time,
and beside it the time of the same problem under load at rates 0.3, 0.9, 1.2 and 1.5
times what today's plan sustains with loss <= 0.01 (its capacity), their ratio, and
the answer (today's plan, another one, or infeasible). Past the capacity the answer is
another plan or a ValueError, never a search that runs on.
"""

from __future__ import annotations

import argparse
import time

from earlyexit.formats import Link, Tier, Topology
from earlyexit.planner import plan
from earlyexit.planner.api import plan_capacity
from earlyexit.planner.synthetic import synthetic_profile


def _cpu(fn, reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        c = time.process_time()
        fn()
        best = min(best, time.process_time() - c)
    return best


def _topology() -> Topology:
    tiers = (Tier("edge", "a1.medium"), Tier("base", "m4.large"), Tier("cloud", "g4dn.xlarge"))
    return Topology(tiers, (Link(10, 20), Link(400, 40)), mtu_bytes=9000)


def case(n: int, reps: int, fracs: tuple[float, ...]) -> None:
    prof = synthetic_profile(n, ("a1.medium", "m4.large", "g4dn.xlarge"), seed=1)
    topo = _topology()
    today = plan(prof, topo, min_accuracy=0.6)
    knee = plan_capacity(today, prof, topo, max_loss=0.01)
    t0 = _cpu(lambda: plan(prof, topo, min_accuracy=0.6), reps)
    print(
        f"N={n}, M=3, 11 thresholds: today's P_lat {t0 * 1e3:.2f} ms; "
        f"today's plan sustains {knee:.4g}/s at loss <= 0.01"
    )
    print(
        f"{'x capacity':>11}{'rate (/s)':>11}{'today (ms)':>12}{'under load (ms)':>17}{'ratio':>8}  plan"
    )
    for frac in fracs:
        lam = frac * knee

        def run(lam: float = lam):
            try:
                return plan(prof, topo, min_accuracy=0.6, arrival_rate=lam, max_loss=0.01)
            except ValueError as exc:
                return str(exc)

        t = _cpu(run, reps)
        p = run()
        what = (
            ("infeasible" if p.startswith("no configuration") else "refused: too many")
            if isinstance(p, str)
            else (
                "same as today"
                if (p.threshold, p.cut_points, p.tier_indices)
                == (today.threshold, today.cut_points, today.tier_indices)
                else f"T={p.threshold:g} P={list(p.cut_points)} D={list(p.tier_indices)}"
            )
        )
        print(f"{frac:>11.1f}{lam:>11.4g}{t0 * 1e3:>12.2f}{t * 1e3:>17.2f}{t / t0:>7.1f}x  {what}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    fracs = (0.3, 0.9, 1.2, 1.5)
    for n in (12, 30) if args.quick else (12, 55, 100):
        case(n, 5 if n < 50 else 3, fracs)
        print()


if __name__ == "__main__":
    main()
