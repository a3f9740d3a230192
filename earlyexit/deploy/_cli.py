"""``earlyexit deploy k8s|compose|netns``: manifests for a plan, or its tiers in network namespaces.

Examples:
    $ earlyexit deploy k8s --bundle bundle/ --plan plan.json --topology topo.yaml \\
          --profile profile.json --image registry.example/earlyexit-runtime:0.1.0 -o manifests/
    $ earlyexit deploy compose --bundle bundle/ -o compose/
    $ sudo earlyexit deploy netns --bundle bundle/ --samples 50
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from earlyexit._checks import (
    float_range,
    input_file,
    int_range,
    output_dir,
    output_file,
    removed_on_failure,
    zmq_address,
)
from earlyexit._cliutil import add_command
from earlyexit._signatures import add_param, read_constant, read_signature

__all__ = ["register", "k8s_command", "compose_command", "netns_command"]


def _bundle_dir(text: str) -> str:
    if not (Path(text) / "manifest.json").is_file():
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a bundle directory (no manifest.json); make one with earlyexit export"
        )
    return text


def _dns_label(text: str) -> str:
    import re

    if not re.fullmatch(r"[a-z]([-a-z0-9]{0,38}[a-z0-9])?", text):
        raise argparse.ArgumentTypeError(
            f"expected a DNS label (lowercase letters, digits and '-', starting with a letter, "
            f"at most 40 characters), got {text!r}"
        )
    return text


def _image(text: str) -> str:
    if not text or any(c.isspace() for c in text) or text != text.strip():
        raise argparse.ArgumentTypeError(f"expected a container image reference, got {text!r}")
    return text


def _sig(module: str, function: str) -> dict[str, Any]:
    """A deploy function's parameters (read from source; the constants they use as defaults)."""
    from earlyexit.deploy import k8s, tiers

    return read_signature(f"earlyexit.deploy.{module}", function, {**vars(tiers), **vars(k8s)})


def _common(p: argparse.ArgumentParser) -> None:
    workers = _sig("tiers", "plan_workers")
    p.add_argument("--bundle", required=True, type=_bundle_dir, help="bundle directory")
    p.add_argument(
        "--plan",
        type=input_file,
        default=None,
        help="plan.json (checked to be the bundle's; default: the bundle's own)",
    )
    p.add_argument(
        "--topology",
        type=input_file,
        default=None,
        help="topology YAML (tier labels become nodeSelectors)",
    )
    p.add_argument(
        "--profile",
        type=input_file,
        default=None,
        help="profile.json: CPU requests from its measured times (needs --topology)",
    )
    add_param(p, workers["rate"], type=float_range(0, 1e9, lo_open=True))
    add_param(p, workers["threads"], type=int_range(1, 256))
    add_param(p, _sig("k8s", "k8s_objects")["image"], type=_image)
    p.add_argument("-o", "--out", required=True, type=output_dir, help="output directory")  # fmt: skip


def register(subparsers: Any) -> None:
    """Add ``deploy-k8s``, ``deploy-compose`` and ``deploy-netns`` (typed ``deploy k8s`` ...)."""
    p = add_command(subparsers, "deploy-k8s", k8s_command,
                    "Kubernetes manifests for a plan (typed: earlyexit deploy k8s)",
                    prog="earlyexit deploy k8s",
                    description="Write a Deployment and a Service per tier, the partition files "
                    "(ConfigMaps, or an image layer when over 1 MiB) and a kustomization.yaml: "
                    "kubectl apply -k OUT.")  # fmt: skip
    _common(p)
    objects = _sig("k8s", "k8s_objects")
    add_param(p, objects["prefix"], type=_dns_label)
    add_param(p, _sig("k8s", "write_k8s")["namespace"], type=_dns_label)
    add_param(p, objects["results"], type=zmq_address())
    add_param(p, objects["files"], choices=read_constant("earlyexit.deploy.k8s", "FILE_MODES"))
    add_param(p, objects["bundle_image"], type=_image)

    p = add_command(subparsers, "deploy-compose", compose_command,
                    "a compose file for a plan on one host (typed: earlyexit deploy compose)",
                    prog="earlyexit deploy compose",
                    description="Write compose.yaml (one service per tier, the same serve command "
                    "lines) and bundle/: docker compose -f OUT/compose.yaml up.")  # fmt: skip
    _common(p)
    spec = _sig("compose", "compose_spec")
    add_param(p, spec["project"], type=_dns_label)
    add_param(p, spec["results"], type=zmq_address())
    add_param(p, spec["publish"], type=int_range(1, 65535))

    p = subparsers.add_parser(
        "deploy-netns",
        prog="earlyexit deploy netns",
        help="run a bundle's tiers each in its own network namespace, root only "
        "(typed: earlyexit deploy netns)",
        description="Put every tier's worker and the source in network namespaces joined by veth "
        "pairs and a bridge, send samples one at a time, print their exits and latency and "
        "delete the namespaces. No bandwidth shaping (the runtime emulates links).",
    )
    p.add_argument("--bundle", required=True, type=_bundle_dir, help="bundle directory")
    p.add_argument("--inputs", type=input_file, default=None, help=".npy batch of inputs")
    p.add_argument(
        "--samples",
        type=int_range(1, 100_000),
        default=20,
        help="random inputs of the bundle's shape when no --inputs",
    )
    p.add_argument(
        "--loopback", action="store_true", help="run on loopback without namespaces (to compare)"
    )
    p.add_argument("--threads", type=int_range(1, 256), default=1)
    p.add_argument(
        "--timeout",
        type=float_range(0, 3600, lo_open=True),
        default=30.0,
        help="seconds to wait for one sample",
    )
    p.add_argument("--out", type=output_file, default=None, help="write the results as JSON")
    p.set_defaults(func=netns_command)  # fmt: skip


def _load(args: argparse.Namespace) -> list[Any]:
    from earlyexit.deploy.tiers import plan_workers
    from earlyexit.formats import Plan, Profile, Topology

    plan = Plan.load(args.plan) if args.plan else None
    topology = Topology.load(args.topology) if args.topology else None
    profile = Profile.load(args.profile) if args.profile else None
    if args.rate is not None and profile is None:
        raise ValueError(
            "--rate needs --profile (and --topology): requests come from measured times"
        )
    prefix = getattr(args, "prefix", None) or getattr(args, "project", "earlyexit")
    return plan_workers(args.bundle, plan, topology, profile, prefix=prefix, rate=args.rate,
                        threads=args.threads)  # fmt: skip


def _say(written: list[Path], out: str, then: str) -> None:
    print(f"wrote {len(written)} files to {out}/; {then}")


def k8s_command(args: argparse.Namespace) -> int:
    """Run ``earlyexit deploy k8s``."""
    from earlyexit.deploy.k8s import write_k8s

    workers = _load(args)
    with removed_on_failure(args.out) as out:
        written = write_k8s(args.bundle, workers, out, namespace=args.namespace,
                            image=args.image, prefix=args.prefix,
                            results=args.results, files=args.files,
                            bundle_image=args.bundle_image, threads=args.threads)  # fmt: skip
    for w in workers:
        print(f"{w.name}: partition {w.partition} (blocks {w.blocks[0]}-{w.blocks[1]}) on tier "
              f"{w.tier}, {w.cores:.2f} cores, {w.memory_mib} MiB, nodeSelector "
              f"{dict(w.node_selector) or '(none)'}")  # fmt: skip
    _say(written, args.out, f"kubectl apply --server-side -k {args.out}")
    return 0


def compose_command(args: argparse.Namespace) -> int:
    """Run ``earlyexit deploy compose``."""
    from earlyexit.deploy.compose import write_compose

    workers = _load(args)
    with removed_on_failure(args.out) as out:
        written = write_compose(args.bundle, workers, out, image=args.image,
                                project=args.project, results=args.results,
                                publish=args.publish, threads=args.threads)  # fmt: skip
    _say(written, args.out, f"docker compose -f {args.out}/compose.yaml up -d")
    return 0


def netns_command(args: argparse.Namespace) -> int:
    """Run ``earlyexit deploy netns``."""
    import numpy as np

    from earlyexit.deploy.netns import LocalChain
    from earlyexit.formats import Manifest

    if args.inputs:
        x = np.load(args.inputs, allow_pickle=False)
    else:
        shape = Manifest.load(args.bundle).input_shape
        x = np.random.default_rng(0).standard_normal((args.samples, *shape)).astype(np.float32)
    try:
        with LocalChain(args.bundle, netns=not args.loopback, threads=args.threads) as chain:
            results = chain.run(x, timeout_s=args.timeout)
    except RuntimeError as err:
        if "need root" in str(err) or "ip netns add fails" in str(err) or "iproute2" in str(err):
            raise ValueError(str(err)) from None
        raise
    exits: dict[int, int] = {}
    for r in results:
        exits[r["partition"]] = exits.get(r["partition"], 0) + 1
    lat = np.array([r["latency_s"] for r in results]) * 1e3
    where = "loopback" if args.loopback else "network namespaces"
    print(f"{len(results)} samples over {where}: exits by partition {dict(sorted(exits.items()))}, "
          f"latency median {np.median(lat):.2f} ms, p90 {np.quantile(lat, 0.9):.2f} ms")  # fmt: skip
    if args.out:
        Path(args.out).write_text(json.dumps(results))
    return 0
