import json

import pytest
from sonic_testing import REPO, run_cli

from sonic_core.cli import main
from sonic_core.tokens import estimate_tokens

SPEECH = REPO / "sonic_core" / "assets" / "speech.wav"


def test_estimate_table():
    r = run_cli("estimate", "--duration", "15", "--resolution", "1024", "--steps", "25", "--dynamic-scale", "1.1",
                "--motion-scale", "1.05")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert any(l.split() == ["tokens", "767"] for l in lines)
    assert any("tier standard" in l and "refused" in l for l in lines)
    assert any("tier pro" in l and "allowed" in l for l in lines)
    assert any("187 generated at 12.5 fps -> 373 at 25 fps" in l for l in lines)


def test_estimate_json_with_tier():
    r = run_cli("estimate", "--duration", "1.25", "--resolution", "512", "--steps", "20", "--tier", "standard",
                "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["tokens"] == 12
    assert report["verdicts"] == [{"tier": "standard", "allowed": True, "metered": False, "reason": None}]
    assert report["frames"] == {"generated": 15, "generated_fps": 12.5, "output": 29, "output_fps": 25.0}


def test_estimate_audio_uses_real_length():
    r = run_cli("estimate", "--audio", str(SPEECH), "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["duration"] == pytest.approx(105508 / 16000)
    assert report["tokens"] == estimate_tokens(105508 / 16000, 512, 25)
    assert [v["tier"] for v in report["verdicts"]] == ["standard", "pro", "api"]


def test_estimate_tiers_file(tmp_path):
    f = tmp_path / "t.toml"
    f.write_text("[tiny]\nmax_tokens_per_job = 10\n")
    r = run_cli("estimate", "--duration", "5", "--tiers-file", str(f), "--json")
    assert [v["tier"] for v in json.loads(r.stdout)["verdicts"]] == ["tiny"]


@pytest.mark.parametrize("args,needle", [
    (("--duration", "nan"), "duration=nan is not finite"),
    (("--duration", "-3"), "duration=-3.0 is too small"),
    (("--duration", "5", "--resolution", "500"), "min_resolution=500"),
    (("--duration", "5", "--steps", "0"), "steps=0"),
    (("--duration", "5", "--tier", "gold"), "unknown tier 'gold'"),
    (("--audio", "/nonexistent.wav"), "does not exist"),
])
def test_estimate_errors_are_one_line(args, needle):
    r = run_cli("estimate", *args)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and needle in r.stderr and "Traceback" not in r.stderr
    assert r.stdout == ""


def test_corrupt_audio_is_one_line(tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 10)
    r = run_cli("estimate", "--audio", str(bad))
    assert r.returncode == 2 and "cannot read audio file 'broken.wav'" in r.stderr
    assert r.stderr.strip().count("\n") == 0



def test_estimate_prints_the_memory_plan_or_the_budget_that_works(capsys):
    assert main(["estimate", "--duration", "3600", "--resolution", "512", "--memory-budget", "8GB", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)["memory_plan"]
    assert plan["fits"] and plan["latents_on_host"] and plan["peak_bytes"] <= 8 * 10**9
    assert main(["estimate", "--duration", "10", "--resolution", "512", "--memory-budget", "1GB"]) == 0
    lines = capsys.readouterr().out.splitlines()
    refusal = next(line for line in lines if line.split()[:2] == ["memory", "--memory-budget"])
    assert "--memory-budget 1.00 GB is below" in refusal and "give --memory-budget" in refusal
