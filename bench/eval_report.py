"""What the evaluation scripts share: their command line, the summary with PASS/FAIL lines, and the JSON file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def parse_eval_arguments(doc: str, name: str, quick_help: str, argv: list[str] | None) -> argparse.Namespace:
    """``--quick`` and ``--out`` (default ``bench/results/NAME.json``) for a script whose docstring is ``doc``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--out", type=Path, default=RESULTS / f"{name}.json")
    return parser.parse_args(argv)


def print_summary(summary: dict, verdicts: dict[str, bool]) -> None:
    print("Summary")
    for key, value in summary.items():
        print(f"  {key}: {value}")
    for name, passed in verdicts.items():
        print(f"  [{'PASS' if passed else 'FAIL'}] {name}")


def write_result(path: Path, result: dict) -> int:
    """Write ``result`` as JSON; the exit status: 0 when every verdict in it passed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {path}")
    return 0 if all(result["verdicts"].values()) else 1
