"""``python -m sonic_core weights {convert,check}``: the weight files a user has, converted and checked.

``check --model tiny`` checks a tree against the embedded tiny model's sizes instead of the published ones: such
trees are what the tests write (and what a user can write with ``write_official_layout``-style scripts); it is a
plain option, not a test hook, and the published sizes stay the default.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..models.bundle import ModelConfigs
from ..weights import default_weights_dir, locate_weights
from ..weights.check import WeightsCheck, check_weights
from ..weights.convert import convert_tree
from ..weights.layout import WEIGHTS_ENV
from ..weights.tiny import TINY_CONFIGS

MODELS = {"sonic": ModelConfigs.official, "tiny": lambda: TINY_CONFIGS}


def add_weights_parser(sub: argparse._SubParsersAction) -> None:
    """Register the ``weights`` command group on the CLI's subparsers."""
    weights = sub.add_parser("weights", help="convert weight files to safetensors, check a weights folder")
    group = weights.add_subparsers(dest="weights_command", required=True)
    convert = group.add_parser("convert", help="rewrite accepted .pth/.pkl/.ckpt files as .safetensors beside them "
                                               "(the loaders then use the safetensors file)")
    convert.add_argument("path", metavar="FILE|DIR", help="a torch pickle, or a folder searched for them")
    convert.set_defaults(run=cmd_convert)
    check = group.add_parser("check", help="list every weight file found (format, dtypes, size, sha256), whether it "
                                           "loads, and what is missing; exit 0 when the set is complete and loads")
    check.add_argument("dir", nargs="?", metavar="DIR",
                       help=f"standalone weights folder (default ${WEIGHTS_ENV}, else ~/.cache/sonic)")
    check.add_argument("--comfy-models", metavar="DIR", help="a ComfyUI models/ folder, searched first")
    check.add_argument("--model", choices=sorted(MODELS), default="sonic",
                       help="network sizes the files must match: sonic (published, default) or tiny (the embedded "
                            "demo model's)")
    check.add_argument("--json", action="store_true", help="print the report as one JSON object")
    check.set_defaults(run=cmd_check)


def cmd_convert(args: argparse.Namespace) -> int:
    results = convert_tree(args.path)
    for result in results:
        print(f"converted {result.source} -> {result.target}" if result.target else f"skipped: {result.reason}")
    if not results:
        print(f"no .pth/.pkl/.ckpt file under {args.path}")
    return 0 if all(r.target for r in results) else 2


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def format_check(report: WeightsCheck, header: str) -> str:
    """The human-readable report: one block per file, then what is missing or not used, then the verdict."""
    lines = [header]
    width = max([len(f.component) for f in report.files] + [len(c) for c in report.missing] + [12])
    for f in report.files:
        lines.append(f"  {f.component.ljust(width)}  {'ok  ' if f.loads else 'FAIL'}  {f.path}")
        lines.append(f"  {''.ljust(width)}        {f.format}, {'/'.join(f.dtypes) or '-'}, {_size(f.size)}, "
                     f"sha256 {f.sha256 or '-'}")
        if f.problem:
            lines.append(f"  {''.ljust(width)}        {f.problem}")
    for component, where in report.missing.items():
        lines.append(f"  {component.ljust(width)}  MISSING  put it at {where}")
    for component, why in report.optional_missing.items():
        lines.append(f"  {component.ljust(width)}  absent  ({why})")
    lines += [f"  not used: {r}" for r in report.rejected]
    bad = [f.component for f in report.files if not f.loads]
    if report.ok:
        lines.append("complete: every required file is present and loads")
    else:
        problems = ([f"missing {', '.join(report.missing)}"] if report.missing else []) + \
                   ([f"does not load: {', '.join(bad)}"] if bad else [])
        lines.append(f"incomplete: {'; '.join(problems)}")
    return "\n".join(lines)


def cmd_check(args: argparse.Namespace) -> int:
    weights_dir = Path(args.dir).expanduser() if args.dir else default_weights_dir()
    files = locate_weights(weights_dir, args.comfy_models)
    report = check_weights(files, MODELS[args.model]())
    if args.json:
        print(json.dumps({"weights_dir": str(weights_dir), "comfy_models": args.comfy_models, "model": args.model,
                          **report.as_dict()}))
    else:
        where = f"{weights_dir}" + (f" (ComfyUI models: {args.comfy_models})" if args.comfy_models else "")
        print(format_check(report, f"Sonic weights in {where}, checked against the {args.model} model:"))
    return 0 if report.ok else 2
