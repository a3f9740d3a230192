"""``earlyexit backbones`` and ``earlyexit blocks``: the registry, and how a backbone decomposes."""

from __future__ import annotations

import argparse
import json

from earlyexit._checks import int_range
from earlyexit._signatures import add_param, read_signature

__all__ = ["register", "describe_blocks"]


def describe_blocks(name: str, num_classes: int = 10, in_chans: int | None = None) -> dict:
    """Decompose a registry backbone and describe its blocks.

    Args:
        name: a registry name (see ``earlyexit backbones``).
        num_classes: number of classes.
        in_chans: input channels (the backbone's default when ``None``).

    Returns:
        ``{"backbone", "input_shape", "blocks": [BlockInfo dicts]}``.

    Example:
        >>> len(describe_blocks("resnet20")["blocks"])
        10
    """
    from earlyexit import backbones
    from earlyexit.surgery.decompose import decompose

    if in_chans is None:
        in_chans = 1 if name == "vggish" else 3
    seq = decompose(backbones.create(name, num_classes=num_classes, in_chans=in_chans))
    return {
        "backbone": name,
        "input_shape": list(seq.input_shape),
        "blocks": [info.to_dict() for info in seq.block_info],
    }


def _cmd_backbones(args: argparse.Namespace) -> int:
    from earlyexit.backbones._registry import get_entry, list_backbones

    names = list_backbones(args.pattern)
    if not names:
        raise ValueError(
            f"no registered backbone matches {args.pattern!r}; `earlyexit backbones` lists them all"
        )
    if args.json:
        print(json.dumps([{"name": n, "description": get_entry(n).description} for n in names]))
    else:
        for n in names:
            print(f"{n:24s} {get_entry(n).description}")
    return 0


def _cmd_blocks(args: argparse.Namespace) -> int:
    info = describe_blocks(args.backbone, args.num_classes, args.in_chans)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{info['backbone']}: input {tuple(info['input_shape'])}, {len(info['blocks'])} blocks")
    print(f"{'#':>3} {'name':22s} {'output shape':18s} {'kbit':>9s} {'params':>10s} {'MMACs':>9s}")
    for b in info["blocks"]:
        print(
            f"{b['index']:>3} {b['name']:22s} {str(tuple(b['output_shape'])):18s} "
            f"{b['output_bits'] / 1e3:9.1f} {b['params']:10d} {b['macs'] / 1e6:9.2f}"
        )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``backbones`` and ``blocks`` subcommands."""
    p = sub.add_parser("backbones", help="list registered backbones")
    p.add_argument("pattern", nargs="?", default=None, help="glob filter, e.g. 'resnet*'")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_backbones)

    p = sub.add_parser("blocks", help="decompose a backbone and list its blocks")
    sig = read_signature(__name__, "describe_blocks")
    add_param(p, sig["name"], "backbone")
    add_param(p, sig["num_classes"], type=int_range(2, 100_000))
    add_param(p, sig["in_chans"], type=int_range(1, 4096))
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_blocks)
