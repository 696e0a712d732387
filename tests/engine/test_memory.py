"""The memory planner (sonic_core/memory.py): budgets parsed, the official networks' predicted device peak under
8 GB for 10 s, 60 s and an hour at 512 px fp16, and no plan changing a single value of the tiny model's frames."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from sonic_core.audio import Speech
from sonic_core.errors import SonicInputError
from sonic_core.face.box import FaceBox
from sonic_core.face.crop import Reference
from sonic_core.inputs import PreparedInputs
from sonic_core.memory import MemoryJob, MemoryPlan, parse_budget, plan_memory
from sonic_core.models.attention import MIN_FEED_FORWARD_ROWS, FeedForward
from sonic_core.pipeline import SonicPipeline
from sonic_core.settings import SonicSettings
from sonic_core.weights.tiny import tiny_models
from sonic_testing import assert_one_line

GB = 10**9


@pytest.mark.parametrize("text, size", [("8GB", 8 * GB), ("8GiB", 8 * 2**30), ("8000MB", 8 * GB), ("8 gb", 8 * GB),
                                        ("12884901888", 12 * 2**30), ("1.5GB", 1_500_000_000), (4096, 4096)])
def test_budgets_are_read_in_decimal_and_binary_units(text, size) -> None:
    assert parse_budget(text) == size


@pytest.mark.parametrize("text", ["8XB", "GB", "-8GB", "0", "8 G B", "", "1e9", "nan"])
def test_a_bad_budget_is_one_line_naming_the_flag(text) -> None:
    with pytest.raises(SonicInputError) as caught:
        parse_budget(text)
    assert_one_line(str(caught.value), "--memory-budget", "8GB")


@pytest.mark.parametrize("seconds", [10, 60, 3600])
def test_official_networks_fit_8gb_at_512px_fp16(seconds) -> None:
    """The predicted device peak (exact weights, latents, conditioning and activation sizes) of the official
    networks at 512 px in fp16 under an 8 GB budget, for 10 s, 60 s and one hour of audio."""
    job = MemoryJob.for_duration(seconds, 512)
    unplanned = plan_memory(job)
    planned = plan_memory(job, 8 * GB)
    assert unplanned.peak_bytes > 8 * GB, "without a plan the UNet call alone overflows 8 GB"
    assert planned.fits and planned.peak_bytes <= 8 * GB
    assert planned.feed_forward_chunk is not None
    assert planned.latents_on_host == (seconds == 3600)  # an hour's latents and audio tokens exceed the budget
    assert planned.guidance_slots == 3 and planned.windows_per_call == 1 and planned.decode_chunk_size == 8


def test_a_budget_no_plan_meets_names_the_smallest_that_works() -> None:
    plan = plan_memory(MemoryJob.for_duration(10, 512), 2 * GB)
    assert not plan.fits and plan.smallest_budget > 2 * GB
    assert_one_line(plan.refusal(), "--memory-budget", "2.00 GB")
    assert plan_memory(MemoryJob.for_duration(10, 512), plan.smallest_budget).fits


def test_larger_budgets_choose_faster_plans() -> None:
    job = MemoryJob.for_duration(60, 512)
    roomy, tight = plan_memory(job, 24 * GB), plan_memory(job, 8 * GB)
    assert roomy.feed_forward_chunk is None and not roomy.offload and not roomy.latents_on_host
    assert tight.peak_bytes < roomy.peak_bytes


# -- no plan changes the frames (tiny model, CPU, fp32) ------------------------------------------------------------

SIZE = 128  # 4×4 latents, 2×2 at the tiny UNet's attention level: 3 slots × 25 frames × 4 tokens
FEED_FORWARD_ROWS = 300  # rows of every feed-forward of a call (spatial and temporal), above one 256-row chunk


def _inputs(seconds: float = 0.5) -> PreparedInputs:
    samples = (np.random.default_rng(0).standard_normal(int(16000 * seconds)) * 0.1).astype(np.float32)
    box = FaceBox(SIZE / 4, SIZE / 4, SIZE / 2, SIZE / 2)
    pixels = torch.linspace(-1, 1, 3 * SIZE * SIZE).reshape(3, SIZE, SIZE)
    reference = Reference(image=Image.new("RGB", (SIZE, SIZE), "gray"), ref_image=pixels,
                          face_mask=torch.ones(1, SIZE, SIZE), face_box=box, crop_box=(0, 0, SIZE, SIZE),
                          mask_box=box, expand_ratio=0.5, clip_source=Image.new("RGB", (SIZE, SIZE), "gray"))
    return PreparedInputs(Speech(samples[None], 16000, samples), reference)


def official_plans() -> list[MemoryPlan]:
    """The planner's choices for the official networks at 512 px fp16 under budgets that force every knob: none
    (24 GB), feed-forward chunks (10 GB), chunks and offloading (8 GB), and for an hour also latents on the host."""
    minute, hour = MemoryJob.for_duration(60, 512), MemoryJob.for_duration(3600, 512)
    return [plan_memory(minute, 24 * GB), plan_memory(minute, 10 * GB), plan_memory(minute, 8 * GB),
            plan_memory(hour, 8 * GB)]


def test_budgets_force_every_knob() -> None:
    knobs = [(p.feed_forward_chunk is not None, p.offload, p.latents_on_host) for p in official_plans()]
    assert knobs == [(False, False, False), (True, False, False), (True, True, False), (True, True, True)]


def test_every_plan_gives_bit_identical_frames() -> None:
    """The tiny pipeline under the plans that change something (a chunk the tiny feed-forwards really split at:
    the smallest) gives the frames of the run without a plan, bit for bit."""
    pipeline = SonicPipeline(tiny_models())
    inputs, settings = _inputs(), SonicSettings(steps=2, interpolate=False)
    smallest = MIN_FEED_FORWARD_ROWS * pipeline.models.unet.feed_forward_inner
    rows: list[int] = []
    for module in pipeline.models.unet.modules():
        if isinstance(module, FeedForward):
            module.net[0].register_forward_hook(lambda m, args, out: rows.append(args[0].shape[:-1].numel()))
    reference = torch.cat(list(pipeline(inputs, settings)))
    assert set(rows) == {FEED_FORWARD_ROWS}
    for plan in official_plans()[1:]:
        rows.clear()
        tiny_plan = replace(plan, feed_forward_chunk=smallest)
        frames = torch.cat(list(pipeline(inputs, settings, memory=tiny_plan)))
        assert torch.equal(frames, reference), tiny_plan.summary()
        assert set(rows) == {FEED_FORWARD_ROWS // 2}, "every feed-forward ran in two chunks"


@torch.no_grad()
def test_feed_forward_chunks_are_exact_and_run() -> None:
    """The chunked feed-forward splits rows (checked with a row counter) and gives the same bits."""
    torch.manual_seed(0)
    ff = FeedForward(32).eval()
    x = torch.randn(3, 700, 32)
    whole = ff(x)
    seen: list[int] = []
    ff.net[0].register_forward_hook(lambda module, args, out: seen.append(args[0].shape[:-1].numel()))
    ff.chunk_elements = 256 * ff.inner
    assert torch.equal(ff(x), whole)
    assert seen == [234] * 3 + [233] * 6  # 2 100 rows in ceil(2100 / 256) = 9 even chunks
