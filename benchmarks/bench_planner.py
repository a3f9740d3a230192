"""Planner benchmark: the exact search against plain Python brute force, side by side.

Run:  python benchmarks/bench_planner.py            (all cases, about a minute)
      python benchmarks/bench_planner.py --quick    (skips the slowest brute force)

Every figure below is measured in this run on this machine. Cases A and D
report wall-clock and process CPU time: on a machine shared with other jobs the
seconds-long brute force is preempted (its wall time grows, which flatters the
ratio) while the best of 20 short searches mostly is not, so the CPU-time ratio
is the conservative one; both are printed. Cases (issue 5):
  A. N=55, M=3, 11 thresholds (ResNet-110 scale): exact P_lat vs plain Python
     brute force of the same model (two flavours: one that evaluates every
     configuration from scratch, as PORTEND's optimizer did, and the test
     suite's reference, which shares E_k/S_k between placements).
  B. N=100, M=5, 11 thresholds (~10^10 configurations): P_lat and full Pareto.
  C. N=200, M=6, 21 thresholds: P_lat time and peak memory (own process).
  D. exact estimator, N=55, 5000 samples: M=3 (goal <= 2 s, target <= 1 s) and M=4.
  E. fine granularity (issue 15 item 5), 21 thresholds: P_lat at N=300 M=6 and
     N=500 M=8 (goal <= 10 s CPU), each in a process of its own, side by side with
     the implementation before the split of planner/search.py (commit OLD_REF,
     read with git; it refused N=500 M=8), and the agreement of the search with
     the brute force on random small problems. ``--fine-n 1000`` adds N=1000 M=8.
  F. under load (issue 14: within 2x of planning without load): P_lat at N=12 and 55
     with an arrival rate of 0.3, 0.9, 1.2 and 1.5 times what today's plan sustains,
     its time beside today's and their ratio (benchmarks/bench_load.py, which also
     runs N=100). ``--only-f`` runs this case alone.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import subprocess
import sys
import tempfile
import time
from itertools import combinations, permutations
from pathlib import Path

import numpy as np

from earlyexit.formats import Link, Tier, Topology
from earlyexit.planner.bruteforce import brute_force_best
from earlyexit.planner.latency import CostModel
from earlyexit.planner.search import search
from earlyexit.planner.space import make_space
from earlyexit.planner.synthetic import synthetic_profile

DEVICES = [
    "a1.medium",
    "m4.large",
    "g4dn.xlarge",
    "reference",
    "m4.large",
    "g4dn.xlarge",
    "reference",
    "a1.medium",
]
OLD_REF = "f94fea3"  # the last commit with the one-module search (before the split)


def topology(m: int) -> Topology:
    """portend-aws extended to m tiers (jumbo frames)."""
    bw = [10, 400, 1000, 100, 50, 200, 25][: m - 1]
    pd = [20, 40, 10, 5, 30, 8, 15][: m - 1]
    tiers = tuple(Tier(f"tier{i}", DEVICES[i], 1.0 + 0.2 * (i >= 3)) for i in range(m))
    return Topology(tiers, tuple(Link(b, d) for b, d in zip(bw, pd, strict=True)), mtu_bytes=9000)


def plain_brute_force(cm: CostModel, min_accuracy: float) -> tuple[float, tuple]:
    """PORTEND's optimizer: evaluate every (T, P, D) from scratch with the formulas of docs/spec.md."""
    n, m, src = cm.n, cm.m, cm.source
    ct, x, r, acc_b = cm.ct.tolist(), cm.x.tolist(), cm.r.tolist(), cm.acc.tolist()
    best = (float("inf"), ())
    for ti in range(len(cm.thresholds)):
        er = cm.er[ti].tolist()
        for n_parts in range(1, m + 1):
            for cuts in combinations(range(1, n + 1), n_parts):
                for d in permutations(range(m), n_parts):
                    e = [er[cuts[0]]] if n_parts > 1 else []
                    for k in range(1, n_parts - 1):
                        e.append(er[cuts[k]] - er[cuts[k - 1]])
                    e.append(1.0 - sum(e))
                    s = [1.0 - sum(e[: k + 1]) for k in range(n_parts)]
                    acc = sum(acc_b[c] * ek for c, ek in zip(cuts, e, strict=True))
                    if acc < min_accuracy:
                        continue
                    lat = x[src][d[0]][0]
                    prev = 0
                    for k in range(n_parts):
                        lat += (s[k] + e[k]) * ct[d[k]][prev][cuts[k]]
                        if k < n_parts - 1:
                            lat += s[k] * x[d[k]][d[k + 1]][cuts[k]]
                        lat += e[k] * r[d[k]]
                        prev = cuts[k]
                    if lat < best[0]:
                        best = (lat, (ti, cuts, d))
    return best


def peak_mb() -> float:
    """Peak resident memory of this process in MB (VmHWM: unlike ru_maxrss, not inherited
    from the parent across fork and exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn, repeat: int = 1):  # noqa: ANN001, ANN201
    """Best wall-clock time of ``repeat`` runs, and the result."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def timed2(fn, repeat: int = 1):  # noqa: ANN001, ANN201
    """Best wall-clock and best CPU time (this process) of ``repeat`` runs, and the result."""
    wall, cpu, out = float("inf"), float("inf"), None
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        cpu = min(cpu, time.process_time() - c)
        wall = min(wall, time.perf_counter() - t)
    return wall, cpu, out


def case_a(quick: bool) -> None:
    prof = synthetic_profile(55, DEVICES[:3], seed=1)
    cm = CostModel(prof, topology(3))
    space = make_space(cm)
    print(
        "A. N=55 M=3 11 thresholds, P_lat: exact search vs plain Python brute force, side by side"
    )
    for eps in (0.75, 0.6, 0.8):
        w_fast, c_fast, best = timed2(
            lambda eps=eps: search(cm, space, "portend", "min_latency", eps), repeat=20
        )
        w_total, c_total, _ = timed2(
            lambda eps=eps: search(
                CostModel(prof, topology(3)), make_space(cm), "portend", "min_latency", eps
            ),
            repeat=20,
        )
        print(
            f"   min accuracy {eps}: exact search {w_fast * 1e3:.2f} ms wall, {c_fast * 1e3:.2f} ms CPU "
            f"(with building the cost model: {w_total * 1e3:.2f} / {c_total * 1e3:.2f} ms) -> "
            f"{best[0].latency * 1e3:.3f} ms, acc {best[0].accuracy:.4f}, P={best[0].cuts} D={best[0].tiers}"
        )
        if eps != 0.75:
            continue
        w_ref, c_ref, ref = timed2(
            lambda eps=eps: brute_force_best(cm, space, "portend", "min_latency", eps)
        )
        print(
            f"   brute force (test reference, shares E/S across placements): {w_ref:.2f} s wall, {c_ref:.2f} s "
            f"CPU -> {ref[0] * 1e3:.3f} ms; ratio {w_ref / w_fast:.0f}x wall, {c_ref / c_fast:.0f}x CPU "
            f"(goal >= 1000x)"
        )
        assert abs(ref[0] - best[0].latency) < 1e-9
        if not quick:
            w_plain, c_plain, plain = timed2(lambda eps=eps: plain_brute_force(cm, eps))
            print(
                f"   plain brute force (every configuration from scratch): {w_plain:.2f} s wall, "
                f"{c_plain:.2f} s CPU -> {plain[0] * 1e3:.3f} ms; ratio {w_plain / w_fast:.0f}x wall, "
                f"{c_plain / c_fast:.0f}x CPU (goal >= 1000x)"
            )
            assert abs(plain[0] - best[0].latency) < 1e-9


def case_b() -> None:
    prof = synthetic_profile(100, DEVICES[:5], seed=1)
    cm = CostModel(prof, topology(5))
    space = make_space(cm)
    for eps in (0.75, 0.8):
        w, c, best = timed2(
            lambda eps=eps: search(cm, space, "portend", "min_latency", eps), repeat=3
        )
        print(
            f"B. N=100 M=5 11 thresholds, P_lat (>= {eps}): {w:.3f} s wall, {c:.3f} s CPU (goal <= 0.5 s) "
            f"-> P={best[0].cuts} D={best[0].tiers} T={best[0].threshold}"
        )
    w, c, front = timed2(lambda: search(cm, space, "portend", "pareto", None))
    print(
        f"B. N=100 M=5 11 thresholds, full Pareto frontier: {w:.2f} s wall, {c:.2f} s CPU (goal <= 5 s), "
        f"{len(front)} points"
    )


def case_c_child() -> None:
    prof = synthetic_profile(200, DEVICES, thresholds=21, seed=1)
    cm = CostModel(prof, topology(6))
    space = make_space(cm)
    out = {}
    for eps in (0.75, 0.8):
        w, c, best = timed2(lambda eps=eps: search(cm, space, "portend", "min_latency", eps))
        out[str(eps)] = [w, c, list(best[0].cuts), list(best[0].tiers)]
    out["maxrss_mb"] = peak_mb()
    print(json.dumps(out))


def case_c() -> None:
    res = subprocess.run(
        [sys.executable, __file__, "--child-c"], check=True, capture_output=True, text=True
    )
    out = json.loads(res.stdout.strip().splitlines()[-1])
    for eps in ("0.75", "0.8"):
        w, c, cuts, tiers = out[eps]
        print(
            f"C. N=200 M=6 21 thresholds, P_lat (>= {eps}): {w:.2f} s wall, {c:.2f} s CPU (goal <= 3 s) "
            f"-> P={cuts} D={tiers}"
        )
    print(f"C. peak memory of that process: {out['maxrss_mb']:.0f} MB (goal <= 2 GB)")


def case_d() -> None:
    prof = synthetic_profile(55, DEVICES[:4], num_samples=5000, seed=1)
    for m in (3, 4):
        cm = CostModel(prof, topology(m))
        space = make_space(cm)
        w, c, best = timed2(
            lambda cm=cm, space=space: search(cm, space, "exact", "min_latency", 0.75)
        )
        goal = " (goal <= 2 s; target <= 1 s)" if m == 3 else " (report only)"
        print(
            f"D. exact estimator N=55 M={m} 5000 samples, P_lat: {w:.2f} s wall, {c:.2f} s CPU{goal} "
            f"-> P={best[0].cuts} D={best[0].tiers} acc {best[0].accuracy:.4f}"
        )


def _old_search():  # noqa: ANN202
    """``search`` of the implementation at OLD_REF (git), or None when git cannot show it."""
    root = Path(__file__).resolve().parent.parent
    res = subprocess.run(
        ["git", "show", f"{OLD_REF}:earlyexit/planner/search.py"],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode != 0:
        return None
    path = Path(tempfile.mkdtemp()) / "search_old.py"
    path.write_text(res.stdout)
    spec = importlib.util.spec_from_file_location("search_old", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["search_old"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod.search


def case_e_child(n: int, m: int, impl: str) -> None:
    """One fine-granularity case in this process: CPU seconds and the answer, as JSON."""
    fn = search if impl == "new" else _old_search()
    out: dict = {}
    if fn is None:
        print(json.dumps({"error": f"git show {OLD_REF} failed"}))
        return
    prof = synthetic_profile(n, DEVICES[:m], thresholds=21, seed=1)
    cm = CostModel(prof, topology(m))
    space = make_space(cm)
    for eps in (0.75, 0.8):
        c = time.process_time()
        try:
            best = fn(cm, space, "portend", "min_latency", eps)
        except ValueError as exc:
            out[str(eps)] = {"error": str(exc)}
            continue
        b = best[0]
        out[str(eps)] = {
            "cpu": time.process_time() - c,
            "lat": b.latency,
            "key": [list(b.cuts), list(b.tiers), b.threshold],
        }
    out["maxrss_mb"] = peak_mb()
    print(json.dumps(out))


def _child(args: list[str], timeout: float) -> dict:
    try:
        res = subprocess.run(
            [sys.executable, __file__, *args],
            check=True,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"stopped after {timeout:.0f} s"}
    return json.loads(res.stdout.strip().splitlines()[-1])


def agreement(cases: int = 40) -> tuple[int, int]:
    """P_lat of the search against the brute force on random small synthetic problems."""
    agree = 0
    for i in range(cases):
        rng = np.random.default_rng(i)
        n, m = int(rng.integers(3, 8)), int(rng.integers(1, 5))
        prof = synthetic_profile(n, DEVICES[:m], thresholds=int(rng.integers(2, 6)), seed=i)
        cm = CostModel(prof, topology(m))
        space = make_space(cm)
        eps = float(rng.uniform(0.3, 0.9))
        got = search(cm, space, "portend", "min_latency", eps)
        ref = brute_force_best(cm, space, "portend", "min_latency", eps)
        same = (not got and ref is None) or (
            got and ref is not None and got[0].key == ref[2] and abs(got[0].latency - ref[0]) < 1e-9
        )
        agree += bool(same)
    return agree, cases


def case_e(fine_n: int | None) -> None:
    sizes = [(300, 6), (500, 8)] + ([(fine_n, 8)] if fine_n else [])
    print("E. fine granularity, 21 thresholds, P_lat: CPU seconds, new vs before the split")
    for n, m in sizes:
        new = _child(["--child-e", str(n), str(m), "new"], 600)
        old = _child(["--child-e", str(n), str(m), "old"], 300)
        for eps in ("0.75", "0.8"):
            a, b = new.get(eps, new), old.get(eps, old)
            if "error" in a:
                print(f"   N={n} M={m} >= {eps}: new {a['error']}")
                continue
            olds = f"{b['cpu']:.2f} s" if "error" not in b else b["error"]
            ratio = f", {b['cpu'] / a['cpu']:.1f}x" if "error" not in b else ""
            same = ""
            if "error" not in b:
                same = ", same optimum" if b["key"] == a["key"] else f", DIFFERENT {b['key']}"
            print(
                f"   N={n} M={m} >= {eps}: new {a['cpu']:.2f} s CPU, old {olds}{ratio}{same} "
                f"-> {a['lat'] * 1e3:.3f} ms P={a['key'][0]} D={a['key'][1]} T={a['key'][2]}"
            )
        goal = " (goal <= 10 s CPU each)" if (n, m) == (500, 8) else ""
        print(f"   N={n} M={m}: peak memory {new.get('maxrss_mb', float('nan')):.0f} MB{goal}")
    agree, cases = agreement()
    print(f"E. exact against the brute force on random small problems: {agree}/{cases} agree")


def case_f() -> None:
    """Under load: the time ratio to today's P_lat (benchmarks/bench_load.py's cases)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_load import case as load_case

    print("F. planning under load, N=12 and 55 (ratio to today's P_lat; issue 14 asks <= 2x)")
    for n in (12, 55):
        load_case(n, 5, (0.3, 0.9, 1.2, 1.5))
        print()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="skip the from-scratch brute force")
    parser.add_argument("--child-c", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-e", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--only-e", action="store_true", help="run case E only")
    parser.add_argument("--only-f", action="store_true", help="run case F only (under load)")
    parser.add_argument("--fine-n", type=int, default=None, help="case E: also N=<this>, M=8")
    args = parser.parse_args()
    if args.child_c:
        case_c_child()
        return
    if args.child_e:
        case_e_child(int(args.child_e[0]), int(args.child_e[1]), args.child_e[2])
        return
    if args.only_f:
        case_f()
        return
    if not args.only_e:
        case_a(args.quick)
        case_b()
        case_c()
        case_d()
    case_e(args.fine_n)
    if not args.only_e:
        case_f()


if __name__ == "__main__":
    main()
