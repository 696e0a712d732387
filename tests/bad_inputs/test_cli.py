"""Bad inputs through ``python -m sonic_core`` (in process, as ``main`` runs it): one ``error:`` line naming the
input, exit status 2, no traceback, and no file left behind (no video, no ledger)."""

from __future__ import annotations

import pytest
from sonic_testing import PORTRAIT, SPEECH, assert_one_line, bad_audio, bad_image, files_in, unwritable_folder

from sonic_core.cli import main


def run(capsys, *args: str) -> tuple[int, str]:
    code = main([str(arg) for arg in args])
    return code, capsys.readouterr().err


def assert_refused(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert err.startswith("error: "), err
    assert_one_line(err, *needles)


def generate(tmp_path, image=PORTRAIT, audio=SPEECH, out=None, *extra: str) -> list:
    (tmp_path / "weights").mkdir(exist_ok=True)
    return ["generate", "--image", image, "--audio", audio, "--out", out or tmp_path / "clip.mp4",
            "--weights", tmp_path / "weights", "--device", "cpu", *extra]


@pytest.mark.parametrize("kind, needle", [
    ("long_name", "File name too long"), ("newline_name", "por\\ntrait.png"), ("directory", "is a directory"),
    ("bomb", "MP"), ("huge", "11000x10000"), ("truncated", "--image"), ("no_face", "face"), ("missing", "--image"),
])
def test_generate_refuses_bad_portraits(tmp_path, capsys, kind, needle):
    image = bad_image(kind, tmp_path)
    before = files_in(tmp_path)
    assert_refused(*run(capsys, *generate(tmp_path, image=image)), needle)
    assert files_in(tmp_path) == before | {tmp_path / "weights"}


@pytest.mark.parametrize("kind, needle", [
    ("long_name", "File name too long"), ("newline_name", "spe\\nech.wav"), ("directory", "is a directory"),
    ("empty", "empty"), ("10ms", "too short"), ("nan", "NaN"), ("corrupt_header", "corrupt_header.wav"),
])
def test_generate_refuses_bad_speech(tmp_path, capsys, kind, needle):
    audio = bad_audio(kind, tmp_path)
    before = files_in(tmp_path)
    assert_refused(*run(capsys, *generate(tmp_path, audio=audio)), needle)
    assert files_in(tmp_path) == before | {tmp_path / "weights"}


def test_generate_refuses_bad_output_paths(tmp_path, capsys):
    cases = {
        tmp_path / ("o" * 300 + ".mp4"): "longer than the file system",
        tmp_path / "new\nline" / "clip.mp4": "new\\nline",
        unwritable_folder(tmp_path / "locked") / "clip.mp4": "not writable",
    }
    for out, needle in cases.items():
        assert_refused(*run(capsys, *generate(tmp_path, out=out)), "--out", needle)
    assert not list(tmp_path.rglob("*.mp4")) and not list(tmp_path.rglob("*.partial"))


@pytest.mark.parametrize("kind, needle", [
    ("directory", "is a directory"), ("missing", "does not exist"), ("long_name", "File name too long"),
    ("wrong_extension", "speech.mp3"),
])
def test_estimate_refuses_bad_speech(tmp_path, capsys, kind, needle):
    audio = bad_audio(kind, tmp_path)
    assert_refused(*run(capsys, "estimate", "--audio", audio, "--resolution", "512", "--steps", "20"), needle)


@pytest.mark.parametrize("flags, needle", [
    (("--duration", "1e308", "--steps", "100", "--resolution", "1280"), "duration"),
    (("--duration", "nan"), "duration"),
    (("--duration", "inf"), "duration"),
    (("--duration", "-5"), "duration"),
    (("--steps", "0"), "steps"),
    (("--resolution", "9" * 40), "resolution"),
])
def test_estimate_refuses_absurd_numbers(capsys, flags, needle):
    args = {"--duration": "5", "--resolution": "512", "--steps": "20"}
    for flag, value in zip(flags[::2], flags[1::2]):
        args[flag] = value
    assert_refused(*run(capsys, "estimate", *[item for pair in args.items() for item in pair]), needle)


def test_tiers_file_that_is_a_directory(tmp_path, capsys, monkeypatch):
    args = ["estimate", "--duration", "5", "--resolution", "512", "--steps", "20"]
    assert_refused(*run(capsys, *args, "--tiers-file", tmp_path), "tiers file", "is a directory")
    monkeypatch.setenv("SONIC_TIERS", str(tmp_path))
    assert_refused(*run(capsys, *args), "tiers file", "is a directory")


def test_bench_with_no_repeats(capsys):
    assert_refused(*run(capsys, "bench", "--repeats", "0"), "--repeats 0")


@pytest.mark.parametrize("tokens", ["0", "-5", "10000000000000"])
def test_a_failed_credit_creates_no_ledger(tmp_path, capsys, tokens):
    ledger = tmp_path / "new" / "ledger.db"
    ledger.parent.mkdir()
    assert_refused(*run(capsys, "ledger", "credit", "--key", "k", "--tokens", tokens, "--ledger",
                        f"sqlite:///{ledger}"), "tokens")
    assert list(ledger.parent.iterdir()) == []


def test_a_credit_with_an_empty_key_creates_no_ledger(tmp_path, capsys):
    assert_refused(*run(capsys, "ledger", "credit", "--key", "", "--tokens", "5", "--ledger",
                        f"sqlite:///{tmp_path / 'ledger.db'}"), "key")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("flags, needle", [
    (("--colour-strength", "2"), "not between 0 and 1"), (("--colour-strength", "red"), "not a number"),
    (("--paste-feather", "0.9"), "not between 0 and 0.5"), (("--paste-feather", "-1"), "not between 0 and 0.5"),
])
def test_generate_refuses_bad_studio_options(tmp_path, capsys, flags, needle):
    """Refused while parsing (argparse's usage line, then one error line naming the flag), before any work."""
    before = files_in(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        run(capsys, *generate(tmp_path, PORTRAIT, SPEECH, None, *flags))
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and "Traceback" not in err
    assert_one_line(err.splitlines()[-1], f"argument {flags[0]}", needle)
    assert files_in(tmp_path) == before | {tmp_path / "weights"}
