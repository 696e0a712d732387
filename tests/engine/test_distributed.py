"""Several devices on one clip: two gloo processes, each running its share of every step's windows and summing
across ranks, give the latents of one process (the tiny model on real prepared inputs, three windows a step, one of
them wrapping onto frames another rank's window covers); each rank's progress counts its own UNet calls; a sum
with a rank that has left ends in one line (SonicRankLost), not a backend traceback."""

from __future__ import annotations

import multiprocessing
import os
import socket

import torch
from sonic_testing import PORTRAIT, SPEECH

from sonic_core.distributed import RankGroup, join, leave
from sonic_core.inputs import PreparedInputs, prepare_inputs
from sonic_core.pipeline import SonicPipeline
from sonic_core.settings import SonicSettings
from sonic_core.weights.tiny import tiny_models

# 4.5 s: 56 generated frames, windows at 0, 25 and 50 (the last wraps onto frames 0-18): rank 0 runs groups 0 and
# 2, rank 1 group 1, so a frame's sum meets contributions from both ranks
SETTINGS = SonicSettings(min_resolution=256, steps=2, duration=4.5)
WORLD = 2


def sample_as_rank(rank: int, port: int, inputs: PreparedInputs, results: multiprocessing.Queue) -> None:
    """One rank of a gloo run on the CPU (the spawned process's entry point)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD))
    torch.set_num_threads(1)
    ranks = join(torch.device("cpu"))
    try:
        calls: list[tuple[int, int]] = []
        latents = SonicPipeline(tiny_models(), ranks=ranks).latents(inputs, SETTINGS,
                                                                    on_step=lambda *call: calls.append(call))
        results.put((rank, latents.numpy(), calls))  # a copy: shared tensor memory dies with this process
        if rank == 0:  # rank 1 leaves now: the next sum finds it gone
            try:
                ranks.sum_(torch.zeros(1))
            except Exception as exc:  # any: the test fails on the type instead of waiting for a message
                results.put(f"{type(exc).__name__}: {exc}")
    finally:
        leave()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_gloo_processes_sample_the_latents_of_one() -> None:
    inputs = prepare_inputs(PORTRAIT, SPEECH, SETTINGS, fit="trim")
    assert inputs.num_frames == 56
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    port = free_port()
    processes = [context.Process(target=sample_as_rank, args=(rank, port, inputs, results)) for rank in range(WORLD)]
    for process in processes:
        process.start()
    single_calls: list[tuple[int, int]] = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the ranks: a convolution's rounding depends on how many threads split it
    try:
        single = SonicPipeline(tiny_models()).latents(inputs, SETTINGS,
                                                      on_step=lambda *call: single_calls.append(call))
    finally:
        torch.set_num_threads(threads)
    by_rank = {rank: (torch.from_numpy(latents), calls)
               for rank, latents, calls in (results.get(timeout=600) for _ in processes)}
    lost = results.get(timeout=600)
    for process in processes:
        process.join()
        assert process.exitcode == 0
    assert single_calls[-1] == (6, 6)  # 2 steps x 3 windows
    assert by_rank[0][1] == [(1, 4), (2, 4), (3, 4), (4, 4)] and by_rank[1][1] == [(1, 2), (2, 2)]
    for rank, (latents, _) in by_rank.items():
        assert latents.shape == single.shape
        difference = (latents - single).abs().max().item()
        print(f"rank {rank}: max |two ranks - one process| = {difference:.3g} (latents up to "
              f"{single.abs().max().item():.3g})")
        assert difference <= 1e-6
    assert lost.startswith("SonicRankLost: rank 0: another rank stopped during the all-reduce ("), lost


def test_a_rank_runs_every_world_th_group() -> None:
    ranks = [RankGroup(rank, 3) for rank in range(3)]
    assert [[g for g in range(7) if r.owns(g)] for r in ranks] == [[0, 3, 6], [1, 4], [2, 5]]
    assert [r.share(7) for r in ranks] == [3, 2, 2] and RankGroup(1, 2).share(1) == 0
