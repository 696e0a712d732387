"""``python -m sonic_core bench``: every lean/naive pair runs and is reported side by side (timings are printed,
never asserted: they depend on the machine)."""

from __future__ import annotations

import argparse
import json

import pytest

from sonic_core.cli.bench import add_bench_parser


def _run(capsys, *argv: str) -> str:
    parser = argparse.ArgumentParser()
    add_bench_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["bench", *argv])
    assert args.run(args) == 0
    return capsys.readouterr().out


@pytest.mark.slow
def test_bench_reports_every_comparison(capsys) -> None:
    report = json.loads(_run(capsys, "--json", "--repeats", "1"))
    assert report["model"] == "tiny" and report["repeats"] == 1
    comparisons = {c["name"]: c for c in report["comparisons"]}
    assert set(comparisons) == {"whisper", "clip", "adapters", "windows", "rife"}
    for c in comparisons.values():
        assert c["lean_s"] > 0 and c["naive_s"] > 0
        assert c["ratio"] == pytest.approx(c["naive_s"] / c["lean_s"])
