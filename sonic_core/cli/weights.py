"""``python -m sonic_core weights {convert,check}``: the weight files a user has, converted and checked."""

from __future__ import annotations

import argparse

from ..weights.convert import convert_tree


def add_weights_parser(sub: argparse._SubParsersAction) -> None:
    """Register the ``weights`` command group on the CLI's subparsers."""
    weights = sub.add_parser("weights", help="convert weight files to safetensors, check a weights folder")
    group = weights.add_subparsers(dest="weights_command", required=True)
    convert = group.add_parser("convert", help="rewrite accepted .pth/.pkl/.ckpt files as .safetensors beside them "
                                               "(the loaders then use the safetensors file)")
    convert.add_argument("path", metavar="FILE|DIR", help="a torch pickle, or a folder searched for them")
    convert.set_defaults(run=cmd_convert)


def cmd_convert(args: argparse.Namespace) -> int:
    results = convert_tree(args.path)
    for result in results:
        print(f"converted {result.source} -> {result.target}" if result.target else f"skipped: {result.reason}")
    if not results:
        print(f"no .pth/.pkl/.ckpt file under {args.path}")
    return 0 if all(r.target for r in results) else 2
