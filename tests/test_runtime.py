import re
import subprocess
import sys
import time

import pytest
import torch

from attnseg.errors import ConfigError
from attnseg.networks import build_network
from attnseg.runtime import (
    Runtime,
    busy_cores,
    choose_threads,
    cpu_has_bf16,
    fastest,
    inference_runtime,
    run_threads,
    runtime_candidates,
)
from attnseg.timing import interleaved_times

CPU = torch.device("cpu")


def test_cpu_candidates_put_the_default_first():
    names = [c.name for c in runtime_candidates(CPU)]
    assert names[:2] == ["channels_last/fp32", "contiguous/fp32"]
    assert names[2:] == (["channels_last/bf16", "contiguous/bf16"] if cpu_has_bf16() else [])
    assert [c.name for c in runtime_candidates(CPU, "contiguous", "off")] == ["contiguous/fp32"]
    assert [c.name for c in runtime_candidates(CPU, "auto", "bf16")] == ["channels_last/bf16", "contiguous/bf16"]


def test_impossible_settings_are_clear_errors():
    with pytest.raises(ConfigError, match=r"training\.amp=fp16 needs a CUDA device"):
        runtime_candidates(CPU, amp="fp16")
    with pytest.raises(ConfigError, match=r"training\.layout=nhwc: choose one of auto, channels_last, contiguous"):
        runtime_candidates(CPU, layout="nhwc")
    with pytest.raises(ConfigError, match=r"--amp=fp16 needs a CUDA device"):
        inference_runtime(None, CPU, amp="fp16")


@pytest.mark.parametrize(("dims", "layout"), [(2, torch.channels_last), (3, torch.channels_last_3d)])
def test_layouts_reach_the_weights_and_the_batch(dims, layout):
    model = build_network("unet", spatial_dims=dims, features=(4, 8, 16))
    Runtime("cpu", "channels_last").prepare_model(model)
    convs = [m.weight for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d))]
    assert all(w.is_contiguous(memory_format=layout) for w in convs)
    x = Runtime("cpu", "channels_last").prepare_input(torch.randn(2, 3, *[8] * dims))
    assert x.is_contiguous(memory_format=layout) and not x.is_contiguous()
    Runtime("cpu", "contiguous").prepare_model(model)
    assert all(w.is_contiguous() for w in convs)


def test_autocast_follows_the_precision():
    linear = torch.nn.Linear(4, 4)
    with Runtime("cpu", amp="bf16").autocast():
        assert linear(torch.randn(2, 4)).dtype == torch.bfloat16
    with Runtime("cpu", amp="off").autocast():
        assert linear(torch.randn(2, 4)).dtype == torch.float32


def test_the_fastest_candidate_wins_and_every_time_is_recorded():
    delays = {"channels_last/fp32": 0.15, "contiguous/fp32": 0.0, "channels_last/bf16": 0.3}
    candidates = [Runtime("cpu", "channels_last"), Runtime("cpu", "contiguous"), Runtime("cpu", amp="bf16")]
    calls = []

    def runner(candidate):
        calls.append(candidate.name)
        return lambda: time.sleep(delays[candidate.name])

    chosen = fastest(candidates, runner, CPU, repeats=3)
    assert chosen.name == "contiguous/fp32"
    assert set(chosen.step_ms) == set(delays) and chosen.step_ms["channels_last/bf16"] >= 300
    assert "fastest training step of 3" in chosen.reason
    assert calls == list(delays)  # each candidate's work is built once


def test_candidates_that_run_out_of_memory_are_left_out():
    candidates = [Runtime("cpu", "channels_last"), Runtime("cpu", "contiguous")]

    def runner(candidate):
        def run():
            if candidate.layout == "channels_last":
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")

        return run

    chosen = fastest(candidates, runner, CPU, repeats=1)
    assert chosen.layout == "contiguous" and "out of memory: channels_last/fp32" in chosen.reason
    everything_fails = fastest(candidates[:1], runner, CPU, repeats=1)
    assert everything_fails.layout == "channels_last" and "every candidate ran out of memory" in everything_fails.reason


def test_running_out_of_memory_while_timing_keeps_the_first_candidate_that_ran():
    candidates = [Runtime("cpu", "channels_last"), Runtime("cpu", "contiguous")]
    calls = {"count": 0}

    def runner(candidate):
        def run():
            calls["count"] += 1
            if calls["count"] > 2:  # both warm-ups fit, the timed rounds do not
                raise RuntimeError("DefaultCPUAllocator: can't allocate memory")

        return run

    chosen = fastest(candidates, runner, CPU, repeats=2)
    assert chosen.layout == "channels_last" and "out of memory while timing" in chosen.reason


def test_other_errors_are_not_swallowed():
    def runner(candidate):
        def run():
            raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

        return run

    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        fastest([Runtime("cpu")], runner, CPU)


def test_inference_follows_the_training_choice_on_the_same_kind_of_device():
    recorded = Runtime("cpu", "contiguous", "bf16", "measured", {"contiguous/bf16": 1.0}).to_dict()
    runtime = inference_runtime(recorded, CPU)
    assert (runtime.layout, runtime.amp) == ("contiguous", "bf16")
    assert (inference_runtime(recorded, CPU, amp="off").amp, inference_runtime(None, CPU).amp) == ("off", "off")
    elsewhere = inference_runtime({**recorded, "device": "cuda"}, CPU)
    assert (elsewhere.layout, elsewhere.amp) == ("channels_last", "off")
    assert Runtime.from_dict({**recorded, "added_later": 1}) == Runtime.from_dict(recorded)


def test_interleaved_times_run_every_function_in_rounds():
    order = []
    times = interleaved_times({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, repeats=2, warmup=1)
    assert order == ["a", "b", "a", "b", "a", "b"] and set(times) == {"a", "b"}


@pytest.mark.parametrize(
    ("setting", "deterministic", "environ", "busy", "count", "reason"),
    [
        (None, False, {}, 2.4, 1, r"other processes use 2\.4 of 2 cores: 1 thread"),  # others hold the cores
        (None, False, {}, 1.0, 1, r"use 1\.0 of 2 cores: 1 thread"),  # one other process: one idle core
        (None, False, {}, 0.7, 1, r"1 thread"),  # the demo's case: load 1.7 with itself, another job at 100%
        (None, False, {}, 0.3, 2, r"torch's default: other processes use 0\.3 of 2 cores"),
        (3, False, {}, 9.0, 3, r"set: training\.threads=3"),  # the user's count, however busy
        (None, False, {"OMP_NUM_THREADS": "2"}, 9.0, 2, r"set: OMP_NUM_THREADS=2"),
        (None, True, {}, 9.0, 2, r"training\.deterministic"),  # a count chosen by the load would vary by run
        (None, False, {}, None, 2, r"load is unknown"),
    ],
)
def test_threads_use_the_cores_other_processes_leave_idle(setting, deterministic, environ, busy, count, reason):
    threads = choose_threads(setting, deterministic, environ, default=2, cores=2, busy=lambda: busy)
    assert threads.count == count
    assert re.search(reason, threads.reason), threads.reason


def test_threads_are_not_measured_when_they_do_not_depend_on_it():
    def never() -> float:
        raise AssertionError("busy() called")

    assert choose_threads(None, False, {}, default=1, cores=1, busy=never).count == 1
    assert choose_threads(4, False, {}, default=2, cores=2, busy=never).count == 4
    assert choose_threads(None, False, {}, default=8, cores=8, busy=lambda: 2.6).count == 5  # 5.4 idle cores


def test_busy_cores_sees_a_process_that_computes_beside_it():
    """A real busy loop in another process: at least most of a core busy while this one sleeps."""
    spinner = subprocess.Popen(
        [sys.executable, "-c", "import time\nend = time.time() + 20\nwhile time.time() < end: pass"]
    )
    try:
        time.sleep(0.5)
        assert busy_cores(0.5) >= 0.6
    finally:
        spinner.kill()
        spinner.wait(timeout=30)


def test_run_threads_restores_the_callers_count(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    with run_threads(1, deterministic=False) as threads:
        assert torch.get_num_threads() == threads.count == 1
    assert torch.get_num_threads() == before
