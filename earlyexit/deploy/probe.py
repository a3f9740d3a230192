"""Send samples through a running chain of tiers and write what came back (the application side).

``python -m earlyexit.deploy.probe --route tcp://HOST:5555 --results-bind tcp://IP:5558
--inputs x.npy --out results.json`` sends each sample of ``x.npy`` alone
(``Client.infer``) and writes, per sample, its exit (partition, block, tier),
prediction, logits, degraded flag and end-to-end latency. The network
namespace deployment runs it inside the source's namespace; it also serves
as a smoke test of a Kubernetes or compose deployment.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["probe", "main"]


def probe(
    route: list[str],
    x: np.ndarray,
    *,
    results_bind: str,
    control_bind: str = "tcp://127.0.0.1:*",
    timeout_s: float = 30.0,
) -> list[dict[str, Any]]:
    """Send every sample of ``x`` alone and return what came back, in order.

    Args:
        route: the route to the first worker's input (the worker's address last).
        x: a batch ``[n, ...]`` of inputs.
        results_bind: where the workers send results (bind it here).
        control_bind: where the first worker acknowledges.
        timeout_s: the longest wait for one sample.

    Returns:
        One mapping per sample: id, partition, block, tier, prediction, logits,
        degraded, latency_s.

    Raises:
        TimeoutError: a sample that does not come back in ``timeout_s``.
    """
    from earlyexit.runtime.client import Client

    out = []
    with Client(route, results_bind=results_bind, control_bind=control_bind) as client:
        for sample in np.asarray(x):
            r = client.infer(sample, timeout_s=timeout_s)
            out.append({
                "id": r.id, "partition": r.partition, "block": r.block, "tier": r.tier,
                "prediction": r.prediction, "degraded": bool(r.degraded), "latency_s": r.latency_s,
                "logits": None if r.logits is None else np.asarray(r.logits).tolist(),
            })  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit code."""
    from earlyexit._checks import OneLineParser, float_range, input_file, zmq_address

    p = OneLineParser(prog="python -m earlyexit.deploy.probe", description=__doc__.split("\n")[0])
    p.add_argument(
        "--route",
        type=zmq_address(),
        action="append",
        required=True,
        help="the first worker's input address (repeat for link hops, worker last)",
    )
    p.add_argument("--results-bind", type=zmq_address(bind=True), required=True)
    p.add_argument("--control-bind", type=zmq_address(bind=True), default="tcp://127.0.0.1:*")
    p.add_argument("--inputs", type=input_file, required=True, help=".npy file, a batch [n, ...]")
    p.add_argument("--out", required=True, help="results JSON to write")
    p.add_argument("--timeout", type=float_range(0, 3600, lo_open=True), default=30.0)
    args = p.parse_args(argv)  # fmt: skip
    x = np.load(args.inputs, allow_pickle=False)
    results = probe(args.route, x, results_bind=args.results_bind,
                    control_bind=args.control_bind, timeout_s=args.timeout)  # fmt: skip
    Path(args.out).write_text(json.dumps(results))
    lat = sorted(r["latency_s"] for r in results)
    print(f"{len(results)} samples, median latency {lat[len(lat) // 2] * 1e3:.2f} ms")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
