"""Queue-time metering without a server: config, callers, refusals, reserve -> commit | refund exactly once."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sonic_testing import basic_prompt, seconds_of

from sonic_core.errors import SonicInputError
from sonic_core.metering.enforcement import Meter, MeteringConfig, PromptRefused, load_config
from sonic_core.metering.ledger import COMMITTED, REFUNDED, RESERVED, open_ledger
from sonic_core.metering.tiers import load_tiers


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def ledger(tmp_path):
    with open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}") as opened:
        yield opened


ENFORCED = {"enforce": True, "default_key": "local", "default_tier": "standard",
            "keys": {"k-pro-alice": "pro", "k-api-svc": "api"}}


def enforced(ledger, owner: str = "", **changes) -> Meter:
    return Meter(MeteringConfig(**{**ENFORCED, **changes}), audio_duration=seconds_of, ledger=ledger, clock=Clock(),
                 owner=owner)


def body(duration=10.0, **kwargs) -> dict:
    return {"prompt": basic_prompt(duration=duration, **kwargs), "client_id": "c1"}


def samples(meter: Meter) -> dict[tuple[str, tuple], float]:
    text = meter.metrics.render().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_no_config_file_means_not_enforced(monkeypatch):
    monkeypatch.delenv("SONIC_METERING", raising=False)
    config = load_config()
    assert not config.enforce and config.ledger_url is None
    meter = Meter(config, audio_duration=seconds_of)
    admission = meter.admit(body())
    assert admission.key is None and admission.cost.total_tokens == 100 and meter.ledger is None
    assert samples(meter)[("sonic_queued_tokens", ())] == 100
    assert meter.admit(body(resolution=1024, steps=50)) is not None  # over the tier, but nothing is enforced
    unpriceable = body()
    unpriceable["prompt"]["3"] = {"class_type": "SomeTextToSpeech", "inputs": {}}
    unpriceable["prompt"]["4"]["inputs"]["duration"] = 0
    assert meter.admit(unpriceable) is None


def test_config_file(tmp_path, monkeypatch):
    file = tmp_path / "metering.toml"
    file.write_text('ledger = "sqlite:///%s"\ndefault_key = "local"\ndefault_tier = "pro"\n'
                    '[keys]\n"k-1" = "api"\n' % (tmp_path / "l.db"))
    monkeypatch.setenv("SONIC_METERING", str(file))
    config = load_config()
    assert config.enforce and config.default_key == "local" and config.tier_of("local").name == "pro"
    assert config.tier_of("k-1").metered
    with pytest.raises(PromptRefused, match="not configured") as refused:
        config.tier_of("k-unknown-key")
    assert "k-unknown-key" not in str(refused.value)  # never echo a whole secret


@pytest.mark.parametrize("text,pattern", [
    ("enforce = 1", "enforce = 1 must be of type bool"),
    ("ledgr = 'x'", "unknown key 'ledgr'"),
    ("[keys]\n'k' = 'gold'", "key 'k' has unknown tier 'gold'"),
    ("default_tier = 'gold'", "unknown tier 'gold'"),
    ("enforce = ", "not valid TOML"),
])
def test_bad_config_is_a_one_line_error(tmp_path, text, pattern):
    file = tmp_path / "m.toml"
    file.write_text(text)
    with pytest.raises(SonicInputError, match=pattern):
        load_config(file)
    with pytest.raises(SonicInputError, match="does not exist"):
        load_config(tmp_path / "missing.toml")


def test_reserve_then_commit_on_success(ledger):
    ledger.credit("local", 1000)
    meter = enforced(ledger)
    admission = meter.admit(body(duration=10.0))
    assert admission.key == "local" and admission.cost.total_tokens == 100
    assert ledger.charge(admission.prompt_id).status == RESERVED
    assert (ledger.balance("local").balance, ledger.balance("local").held) == (900, 100)
    meter.started(admission.prompt_id)
    assert samples(meter)[("sonic_running_jobs", ())] == 1 and samples(meter)[("sonic_queued_tokens", ())] == 0
    meter._clock.now += 12.5
    meter.finished(admission.prompt_id, "success")
    charge = ledger.charge(admission.prompt_id)
    assert (charge.status, charge.seconds, charge.tokens, charge.tier) == (COMMITTED, 12.5, 100, "standard")
    meter.finished(admission.prompt_id, "error")  # a second settlement is a no-op
    meter.abandoned(admission.prompt_id)
    assert ledger.charge(admission.prompt_id).status == COMMITTED
    assert (ledger.balance("local").balance, ledger.balance("local").spent) == (900, 100)
    got = samples(meter)
    assert got[("sonic_job_seconds_count", ())] == 1 and got[("sonic_job_seconds_sum", ())] == 12.5
    assert got[("sonic_tokens_total", (("tier", "standard"),))] == 100 and got[("sonic_running_jobs", ())] == 0


def test_restart_reconciles_the_holds_a_killed_server_left(ledger, tmp_path):
    """A server dies with one prompt that wrote its video, one running and one queued: the next process of the
    same server commits the first, refunds the others and leaves another server's hold alone."""
    ledger.credit("local", 1000)
    output_dir = tmp_path / "output"
    output_dir.mkdir()
    dead = enforced(ledger, owner="gpu-1")
    written, running, queued = (dead.admit(body(duration=10.0)).prompt_id for _ in range(3))
    dead.started(written)
    (output_dir / "Sonic_00001_.mp4").write_bytes(b"video")
    dead.output_written(output_dir / "Sonic_00001_.mp4")
    dead.started(running)  # ComfyUI runs one prompt at a time; the first never reached task_done
    dead.output_written(tmp_path / "elsewhere.mp4")  # outside the output folder: no proof of this prompt's output
    other = enforced(ledger, owner="gpu-2")
    elsewhere = other.admit(body(duration=10.0)).prompt_id
    assert {h.job_id for h in ledger.holds()} == {written, running, queued, elsewhere}

    restarted = enforced(ledger, owner="gpu-1")
    settled = {charge.job_id: charge.status for charge in restarted.reconcile(output_dir)}
    assert settled == {written: COMMITTED, running: REFUNDED, queued: REFUNDED}
    assert [h.job_id for h in ledger.holds()] == [elsewhere]
    assert (ledger.balance("local").balance, ledger.balance("local").held, ledger.balance("local").spent) == \
        (800, 100, 100)
    assert restarted.reconcile(output_dir) == []


@pytest.mark.parametrize("outcome", ["error", "interrupted"])
def test_refund_on_failure_or_interruption(ledger, outcome):
    ledger.credit("local", 1000)
    meter = enforced(ledger)
    admission = meter.admit(body())
    meter.started(admission.prompt_id)
    meter.finished(admission.prompt_id, outcome)
    assert ledger.charge(admission.prompt_id).status == REFUNDED
    assert (ledger.balance("local").balance, ledger.balance("local").held) == (1000, 0)
    got = samples(meter)
    assert got[("sonic_failures_total", (("reason", outcome),))] == 1 and got[("sonic_running_jobs", ())] == 0


def test_cancelled_before_running_is_refunded(ledger):
    ledger.credit("local", 1000)
    meter = enforced(ledger)
    admission = meter.admit(body())
    assert meter.pending() == {admission.prompt_id}
    meter.abandoned(admission.prompt_id, "cancelled")
    assert ledger.charge(admission.prompt_id).status == REFUNDED and meter.pending() == set()
    got = samples(meter)
    assert got[("sonic_queued_tokens", ())] == 0 and got[("sonic_failures_total", (("reason", "cancelled"),))] == 1


def test_refusals_leave_the_ledger_untouched(ledger):
    ledger.credit("local", 150)
    meter = enforced(ledger)
    cases = [
        (body(duration=10.0, resolution=1024, steps=25), 403, "tier", "1024 px"),
        (body(duration=20.0), 402, "budget", "needs 200 tokens"),
        ({**body(), "extra_data": {"sonic_api_key": "k-who-is-this"}}, 403, "key", "not configured"),
    ]
    unpriceable = body(duration=0.0)
    unpriceable["prompt"]["3"] = {"class_type": "SomeTextToSpeech", "inputs": {}}
    cases.append((unpriceable, 400, "unpriced", r"node 4 \(SonicPreData\) input 'audio' comes from node 3"))
    for request, status, reason, pattern in cases:
        with pytest.raises(PromptRefused, match=pattern) as refused:
            meter.admit(request)
        assert (refused.value.status, refused.value.reason) == (status, reason)
    assert ledger.balance("local") == ledger.balance("local").__class__("local", 150, 0, 0, False)
    assert meter.pending() == set()
    got = samples(meter)
    assert {r: got[("sonic_refusals_total", (("reason", r),))] for r in ("tier", "budget", "key", "unpriced")} == \
        {"tier": 1, "budget": 1, "key": 1, "unpriced": 1}
    assert got[("sonic_queued_tokens", ())] == 0


def test_no_key_without_default_is_refused(ledger):
    meter = enforced(ledger, default_key=None)
    with pytest.raises(PromptRefused, match="no API key") as refused:
        meter.admit(body())
    assert refused.value.status == 401


def test_header_key_wins_and_metered_keys_need_no_balance(ledger):
    ledger.credit("k-pro-alice", 5000)
    meter = enforced(ledger)
    request = {**body(duration=25.0, resolution=1024, steps=25), "extra_data": {"sonic_api_key": "local"}}
    admission = meter.admit(request, header_key="k-pro-alice")
    assert (admission.key, admission.cost.tier, admission.cost.total_tokens) == ("k-pro-alice", "pro", 1250)
    big = meter.admit({**body(duration=300.0, resolution=1280, steps=50), "extra_data": {"sonic_api_key":
                                                                                          "k-api-svc"}})
    assert big.cost.metered and ledger.charge(big.prompt_id).metered
    assert ledger.balance("k-api-svc").balance == 0


def test_prompt_id_is_kept_and_never_reused(ledger):
    ledger.credit("local", 1000)
    meter = enforced(ledger)
    admission = meter.admit({**body(), "prompt_id": "job-1"})
    assert admission.prompt_id == "job-1"
    with pytest.raises(PromptRefused, match="already used") as refused:
        meter.admit({**body(), "prompt_id": "job-1"})
    assert refused.value.status == 409
    meter.finished("job-1", "success")
    with pytest.raises(PromptRefused, match="already used"):  # known to the ledger after settlement
        meter.admit({**body(), "prompt_id": "job-1"})
    assert ledger.balance("local").spent == 100


def test_prompt_without_sampler_is_not_metered(ledger):
    meter = enforced(ledger)
    assert meter.admit({"prompt": {"1": {"class_type": "LoadImage", "inputs": {"image": "a.png"}}}}) is None
    assert meter.admit({"number": 3}) is None


def test_estimate_uses_the_callers_tier(ledger):
    meter = enforced(ledger)
    graph = basic_prompt(duration=10.0, resolution=1024, steps=25)
    assert not meter.estimate(graph).allowed
    assert meter.estimate(graph, key="k-pro-alice").allowed
    assert meter.estimate(graph, tier="api").metered
    assert set(load_tiers()) == set(meter.config.tiers)
