"""The runtime's own cost: a 3-tier deployment on this host against one process.

Runs the same partitions two ways and prints them side by side:

* **one process**: :meth:`BundleSession.predict` (or the synthetic model's
  in-process early exit), one sample at a time;
* **3 tiers**: one worker process per partition, ZeroMQ between them (``ipc://``
  by default, ``--transport tcp`` for loopback TCP), no link emulation, a client
  in this process.

Per-message overhead at batch 1: each sample is run once in one process and
once through the deployment, one right after the other (so both see the same
load on a shared machine); its overhead is the difference divided by the
messages it took (the input, one per hand-off to the next partition, the
result). The median over samples is printed, next to two floors: a bare ZeroMQ
hop between processes sent back to back, and the same with a pause of one
deployed latency between round trips, so that the receivers fall asleep between
messages as the tier workers do here (waking a sleeping process is then part of
every hop; on a busy 2-core host it costs several times the hop itself). Throughput: every sample
submitted at once (pipelined across the tiers), without and with
micro-batching, against one process running them one at a time. Each figure is
the best of ``--rounds`` rounds: on a machine shared with other work the
quietest round is the closest to what the runtime itself costs.

Everything is measured in two modes, round after round (side by side):

* **default**: the workers as ``deploy()`` starts them;
* **tuned**: each worker's serving thread on its own core, in turn
  (``deploy(cpu_affinity="spread")``), and idle CPUs kept polling by a CPU
  latency request of 0 us (what ``deploy(cpu_latency_us=0)`` asks; here this
  process holds it around the tuned rounds only, since the request is
  system-wide). See :mod:`earlyexit.runtime.cpus` and docs/deployment.md. On a
  virtual machine whose idle CPUs return to the host, most of a hop is waking
  up: the tuned mode shows what the runtime costs once that is taken away.

Usage::

    python benchmarks/bench_runtime.py --bundle bundle/ [--samples 500] [--json]
    python benchmarks/bench_runtime.py --synthetic          # no bundle, numpy model

Without ``--bundle`` or ``--synthetic`` it exports an (untrained) ResNet-20 in
3 partitions to a temporary bundle first (needs torch for that step only).
The threshold is set so that about a third of the samples leave at each exit.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from earlyexit.runtime.cpus import hold_cpu_latency
from earlyexit.runtime.deployment import deploy

GOALS = {"overhead_ms_per_message": 0.1, "pipelined_x": 0.8, "micro_batch_x": 1.2}


def _one_process_rate(predict: Callable[[np.ndarray], object], x: np.ndarray) -> float:
    t0 = time.perf_counter()
    for xi in x:
        predict(xi[None])
    return len(x) / (time.perf_counter() - t0)


def _pipelined_rate(d: object, x: np.ndarray) -> tuple[float, list[int]]:
    t0 = time.perf_counter()
    res = d.run(x, timeout_s=300)  # type: ignore[attr-defined]
    rate = len(x) / (time.perf_counter() - t0)
    return rate, [r.partition for r in res]


def _overhead(
    d: object, predict: Callable[[np.ndarray], object], x: np.ndarray
) -> dict[str, float]:
    """Paired per-sample overhead per message, one sample in flight at a time."""
    client = d.client  # type: ignore[attr-defined]
    per_msg, one, dep = [], [], []
    for xi in x:
        t0 = time.perf_counter()
        predict(xi[None])
        t_one = time.perf_counter() - t0
        r = client.infer(xi, 30.0)
        messages = r.partition + 2  # the input, each hand-off, the result
        per_msg.append((r.latency_s - t_one) / messages)
        one.append(t_one)
        dep.append(r.latency_s)
    return {
        "overhead_ms_per_message": float(np.median(per_msg)) * 1e3,
        "one_process_p50_ms": float(np.median(one)) * 1e3,
        "three_tiers_p50_ms": float(np.median(dep)) * 1e3,
    }


_RELAY = """
import sys, zmq
ctx = zmq.Context()
a = ctx.socket(zmq.PULL); a.bind(sys.argv[1])
b = ctx.socket(zmq.PUSH); b.connect(sys.argv[2])
print("READY", flush=True)
while True:
    b.send(a.recv(copy=False), copy=False)
"""


def _raw_hop_ms(transport: str, size: int, n: int = 1000, gap_s: float = 0.0) -> float:
    """Median time of one bare ZeroMQ hop between processes here: the floor of a message.

    ``gap_s`` pauses between round trips, so that the relays fall asleep between
    messages as tier workers do when one sample at a time is in flight (their
    wake-up is then part of every hop); 0 sends back to back.
    """
    import subprocess

    import zmq

    tmp = tempfile.mkdtemp(prefix="bench-hop-")
    if transport == "ipc":
        addrs = [f"ipc://{tmp}/{i}" for i in range(3)]
    else:
        import socket

        ports = []
        for _ in range(2):  # free ports for the relays (the OS picks them)
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                ports.append(s.getsockname()[1])
        addrs = ["tcp://127.0.0.1:*"] + [f"tcp://127.0.0.1:{p}" for p in ports]
    ctx = zmq.Context()
    sink = ctx.socket(zmq.PULL)
    sink.bind(addrs[0])
    back = sink.getsockopt_string(zmq.LAST_ENDPOINT)
    relays = [
        subprocess.Popen(
            [sys.executable, "-c", _RELAY, addrs[i], addrs[i + 1] if i < 2 else back],
            stdout=subprocess.PIPE,
        )
        for i in (1, 2)
    ]
    try:
        for r in relays:
            r.stdout.readline()  # type: ignore[union-attr]
        out = ctx.socket(zmq.PUSH)
        out.connect(addrs[1])
        msg = b"x" * size
        lat = []
        for i in range(n + 100):
            t0 = time.perf_counter()
            out.send(msg)
            sink.recv()
            if i >= 100:
                lat.append(time.perf_counter() - t0)
            if gap_s > 0:
                time.sleep(gap_s)
        out.close(linger=0)
    finally:
        for r in relays:
            r.kill()
            r.wait()
        sink.close(linger=0)
        ctx.term()
    return float(np.median(lat)) * 1e3 / 3  # three hops per round trip


def _export_demo_bundle(out_dir: Path) -> Path:
    import torch

    from earlyexit import backbones
    from earlyexit.export import export_bundle
    from earlyexit.formats import Estimate, PartitionPlan, Plan
    from earlyexit.surgery import MultiExitModel, decompose

    torch.manual_seed(0)
    model = MultiExitModel(
        decompose(backbones.create("resnet20", num_classes=10)), num_classes=10
    ).eval()
    est = Estimate(
        0.0,
        0.0,
        (0.3, 0.3, 0.4),
        dict.fromkeys(("compute", "serialize", "transmit", "propagate"), 0.0),
    )
    plan = Plan(
        0.5,
        (
            PartitionPlan(1, 3, 0, "edge"),
            PartitionPlan(4, 6, 1, "base-station"),
            PartitionPlan(7, 10, 2, "cloud"),
        ),
        est,
    )
    export_bundle(model, plan, out_dir, formats="onnx", overwrite=True)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", help="a bundle with 3 partitions")
    parser.add_argument("--synthetic", action="store_true", help="numpy model, no bundle")
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3, help="best of this many rounds")
    parser.add_argument("--transport", default="ipc", choices=("ipc", "tcp"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)

    if args.synthetic:
        from earlyexit.runtime.synthetic import SyntheticModel

        model_kwargs = {"num_partitions": 3, "hidden": 256, "repeat": 4}
        model = SyntheticModel(**model_kwargs)
        x = model.inputs(args.samples)
        e0 = model.run_partition(0, x)[1]
        threshold = float(np.quantile(e0, 1 / 3))

        def predict(xi: np.ndarray) -> object:
            return model.reference(xi, threshold)

        target: dict[str, object] = {"synthetic": model_kwargs}
        name = "synthetic MLP (3 partitions)"
    else:
        from earlyexit.runtime.session import BundleSession

        bundle = (
            Path(args.bundle)
            if args.bundle
            else _export_demo_bundle(Path(tempfile.mkdtemp(prefix="bench-runtime-")) / "bundle")
        )
        session = BundleSession(bundle)
        if session.num_partitions != 3:
            raise SystemExit(f"the bundle has {session.num_partitions} partitions; 3 are needed")
        x = rng.standard_normal((args.samples, *session.manifest.input_shape)).astype(np.float32)
        threshold = float(np.quantile(session.run_partition(0, x)[1], 1 / 3))

        def predict(xi: np.ndarray) -> object:
            return session.predict(xi, threshold)

        target = {"bundle": bundle}
        name = f"bundle {bundle}"

    load_before = os.getloadavg()[0]
    common = {"threshold": threshold, "transport": args.transport, **target}
    modes = ("default", "tuned")
    rows: dict[str, dict[str, list]] = {
        m: {"one": [], "pipe": [], "batch8": [], "overhead": []} for m in modes
    }
    exits: list[int] = []
    held = None
    b8 = {"max_batch": 8, "batch_timeout_s": 0.001}
    pin = {"cpu_affinity": "spread"}
    with contextlib.ExitStack() as stack:
        deps = {
            "default": (stack.enter_context(deploy(**common)),
                        stack.enter_context(deploy(**common, **b8))),
            # every worker's serving thread on its own core (in turn); the CPU latency
            # request is held by this process around its rounds only (it is system-wide,
            # as deploy(cpu_latency_us=0)'s workers would hold it), so the default rounds
            # run without it
            "tuned": (stack.enter_context(deploy(**common, **pin)),
                      stack.enter_context(deploy(**common, **pin, **b8))),
        }  # fmt: skip
        for pair in deps.values():
            for dep in pair:
                dep.run(x[:20], one_at_a_time=True)  # connections up
        for _ in range(args.rounds):
            for mode in modes:  # side by side, round after round
                d, d8 = deps[mode]
                with hold_cpu_latency(0 if mode != "default" else None) as req:
                    if mode != "default":
                        held = req
                        if not req.active:
                            continue
                    r = rows[mode]
                    r["overhead"].append(_overhead(d, predict, x[: min(len(x), 200)]))
                    r["one"].append(_one_process_rate(predict, x))
                    rate, exits = _pipelined_rate(d, x)
                    r["pipe"].append(rate)
                    r["batch8"].append(_pipelined_rate(d8, x)[0])
        floors: dict[str, tuple[float, float]] = {}
        for mode in modes:
            with hold_cpu_latency(0 if mode != "default" else None) as req:
                if mode != "default" and not req.active:
                    continue
                over = min(rows[mode]["overhead"], key=lambda r: r["overhead_ms_per_message"])
                gap = over["three_tiers_p50_ms"] / 1e3
                size = int(x[0].nbytes)
                floors[mode] = (
                    min(_raw_hop_ms(args.transport, size) for _ in range(args.rounds)),
                    # one message in flight, the receivers asleep in between, as above
                    min(_raw_hop_ms(args.transport, size, 300, gap) for _ in range(args.rounds)),
                )
    # other processes share the cores: the figures above move with what they do
    load = (load_before, os.getloadavg()[0])
    report: dict[str, object] = {
        "model": name,
        "samples": args.samples,
        "threshold": threshold,
        "transport": args.transport,
        "exits_per_partition": np.bincount(exits, minlength=3).tolist(),
        "cores": os.cpu_count(),
        "load_average_1min": list(load),
        "cpu_latency_request": None if held is None else {"active": held.active,
                                                          "reason": held.reason},
    }  # fmt: skip
    for mode in modes:
        r = rows[mode]
        if not r["overhead"]:
            report[mode] = None
            continue
        one = max(r["one"])
        m = {
            "one_process_per_s": one,
            "pipelined_per_s": max(r["pipe"]),
            "micro_batch8_per_s": max(r["batch8"]),
            **min(r["overhead"], key=lambda o: o["overhead_ms_per_message"]),
            "bare_zeromq_hop_ms": floors[mode][0],
            "bare_zeromq_hop_after_idle_ms": floors[mode][1],
        }
        m["pipelined_x"] = m["pipelined_per_s"] / one
        m["micro_batch_x"] = m["micro_batch8_per_s"] / one
        report[mode] = m
    report["goals"] = GOALS
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0
    print(
        f"{name}, {args.samples} samples, threshold {threshold:.3f}, exits per partition "
        f"{report['exits_per_partition']}, transport {args.transport}, best of {args.rounds}"
    )
    print(
        f"host: {os.cpu_count()} cores, load average (1 min) {load[0]:.1f} before and "
        f"{load[1]:.1f} after (other work on these cores delays every hand-off)"
    )
    for mode in modes:
        m = report[mode]
        if mode == "default":
            print("\nidle CPUs sleep (the default)")
        else:
            print("\ntuned: idle CPUs poll (a CPU latency request of 0 us: deploy(cpu_latency_us=0), "
                  "serve --cpu-latency-us 0), each worker on its own core (deploy(cpu_affinity="
                  "'spread'), serve --cpu-affinity)")  # fmt: skip
        if not isinstance(m, dict):
            print(f"  not measured: {held.reason if held else 'no request'}")
            continue
        _print_mode(m)
    return 0


def _print_mode(m: dict) -> None:
    """One mode's table: latency, overhead per message with its floors, throughputs."""
    one = m["one_process_per_s"]
    print(f"{'':44s}{'one process':>13s}{'3 tiers':>10s}{'ratio':>8s}{'goal':>8s}")
    print(
        f"{'latency at batch 1, p50 (ms)':44s}{m['one_process_p50_ms']:13.3f}"
        f"{m['three_tiers_p50_ms']:10.3f}"
    )
    print(
        f"{'runtime overhead per message (ms)':44s}{'':13s}"
        f"{m['overhead_ms_per_message']:10.3f}{'':8s}{'<= 0.1':>8s}"
    )
    print(
        f"{'  a bare ZeroMQ hop between processes':44s}{'':13s}"
        f"{m['bare_zeromq_hop_ms']:10.3f}{'':8s}{'(floor)':>8s}"
    )
    print(
        f"{'  the same, receivers asleep in between':44s}{'':13s}"
        f"{m['bare_zeromq_hop_after_idle_ms']:10.3f}{'':8s}{'(floor)':>8s}"
    )
    for label, key, ratio, goal in (
        ("pipelined throughput (samples/s)", "pipelined_per_s", "pipelined_x", ">= 0.8x"),
        ("pipelined, micro-batch 8 (samples/s)", "micro_batch8_per_s", "micro_batch_x", ">= 1.2x"),
    ):
        print(f"{label:44s}{one:13.0f}{m[key]:10.0f}{m[ratio]:7.2f}x{goal:>8s}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
