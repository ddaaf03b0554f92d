"""The pre-flight memory estimate against hand-counted bytes."""

import torch
from torch import nn

from attnseg.networks import PositionAttention, estimate_step_memory


def test_forward_of_one_conv_counts_its_output():
    conv = nn.Conv2d(1, 8, 3, padding=1)
    estimate = estimate_step_memory(conv, (2, 1, 32, 32), backward=False)
    assert estimate.peak_live == 2 * 8 * 32 * 32 * 4
    assert estimate.parameters == (8 * 9 + 8) * 4


def test_a_chain_frees_what_it_no_longer_needs():
    """Forward-only through 3 convs: at most two activations are alive at once (input of a conv and its
    output), never all three."""
    model = nn.Sequential(nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 1))
    one = 1 * 4 * 16 * 16 * 4
    assert estimate_step_memory(model, (1, 4, 16, 16), backward=False).peak_live == 2 * one


def test_naive_position_attention_is_charged_its_n_by_n_map():
    x_shape, n = (2, 16, 64, 64), 64 * 64
    naive = estimate_step_memory(PositionAttention(16, implementation="naive").train(), x_shape)
    fused = estimate_step_memory(PositionAttention(16, implementation="sdpa").train(), x_shape)
    attention_map = 2 * n * n * 4
    assert naive.peak_live >= 2 * attention_map  # the energies and their softmax, kept for backward
    assert fused.peak_live < attention_map / 16  # O(N·C) only


def test_estimate_does_not_touch_the_model():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    estimate_step_memory(model, (2, 1, 16, 16))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_flop_counting_still_sees_the_attention():
    """The fused-kernel stand-in is only for memory estimates: FLOP counting on meta (``attnseg profile``)
    counts the attention products."""
    from attnseg.profiling import count_gflops

    n, channels = 32 * 32, 16
    attention_products = 2 * (2 * n * n * channels)  # q·kᵀ (q/k padded to C) and A·v, 2 FLOPs per MAC
    assert count_gflops(PositionAttention(channels), (1, channels, 32, 32)) * 1e9 >= attention_products


def _fake_system(tmp_path, monkeypatch, meminfo_kib: int, cgroup_lines: str, files: dict[str, str]) -> None:
    from attnseg.networks import memory

    (tmp_path / "meminfo").write_text(f"MemTotal: 99999999 kB\nMemAvailable: {meminfo_kib} kB\n")
    (tmp_path / "self_cgroup").write_text(cgroup_lines)
    for relative, text in files.items():
        path = tmp_path / "cgroup" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    monkeypatch.setattr(memory, "_MEMINFO", tmp_path / "meminfo")
    monkeypatch.setattr(memory, "_SELF_CGROUP", tmp_path / "self_cgroup")
    monkeypatch.setattr(memory, "_CGROUPS", tmp_path / "cgroup")


def test_available_memory_is_the_smallest_room(tmp_path, monkeypatch):
    """MemAvailable, unless the process's cgroup (or one above it) leaves less: v2 and v1 layouts; v1's
    "no limit" is a huge number and is ignored."""
    from attnseg.networks.memory import available_memory

    gib = 2**30
    _fake_system(tmp_path, monkeypatch, 20 * 2**20, "0::/jobs/42\n", {
        "jobs/42/memory.max": "max\n", "jobs/42/memory.current": str(gib),
        "jobs/memory.max": str(6 * gib), "jobs/memory.current": str(2 * gib),
    })  # fmt: skip
    assert available_memory() == 4 * gib  # the parent's 6 GiB limit minus its 2 GiB in use
    _fake_system(tmp_path, monkeypatch, 3 * 2**20, "4:memory:/box\n0::/\n", {
        "memory/box/memory.limit_in_bytes": str(8 * gib), "memory/box/memory.usage_in_bytes": str(gib),
        "memory/memory.limit_in_bytes": "9223372036854771712",
    })  # fmt: skip
    assert available_memory() == 3 * gib  # MemAvailable is smaller than the v1 limit's 7 GiB of room
    assert available_memory("meta") is None
