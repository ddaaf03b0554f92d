import csv
import json
import math
import signal
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from attnseg.model_dir import ModelDir
from attnseg.networks import build_network
from attnseg.runtime import runtime_candidates
from attnseg.training.seeding import seed_everything
from attnseg.training.trainer import TrainingError
from tests.processes import Finished, child_env, run_watched, torchrun_command
from tests.training.synthetic import make_trainer

SCRIPT = Path(__file__).parent / "synthetic.py"


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_training_learns_and_writes_the_model_dir(tmp_path):
    trainer = make_trainer(tmp_path, ["training.epochs=6", "training.iterations_per_epoch=8"])
    state = trainer.fit()
    assert state.epoch == 6
    assert state.best_metric > 0.7  # discs on noise are easy
    first, last = state.history[0]["train_loss"], state.history[-1]["train_loss"]
    assert last < first
    for name in (ModelDir.WEIGHTS, ModelDir.CHECKPOINT, ModelDir.LOG, ModelDir.PROGRESS):
        assert (tmp_path / name).exists(), name
    with open(tmp_path / ModelDir.LOG) as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert {"train_loss", "lr", "val_dice_mean", "seconds"} <= set(rows[0])
    assert any((tmp_path / ModelDir.TENSORBOARD).iterdir())
    assert (tmp_path / ModelDir.PROGRESS).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_checkpoint_holds_everything_and_loads_without_pickle(tmp_path):
    make_trainer(tmp_path, ["training.epochs=1"]).fit()
    checkpoint = torch.load(tmp_path / ModelDir.CHECKPOINT, weights_only=True)
    assert {"model", "optimizer", "scheduler", "scaler", "state", "rng", "config", "provenance"} <= set(checkpoint)
    assert checkpoint["state"]["epoch"] == 1
    assert checkpoint["config"]["optimizer"]["lr"] == 0.01
    assert checkpoint["provenance"]["attnseg_version"]
    weights = load_file(str(tmp_path / ModelDir.WEIGHTS))
    assert weights.keys() == checkpoint["model"].keys()


def test_same_seed_gives_identical_weights(tmp_path):
    make_trainer(tmp_path / "a").fit()
    make_trainer(tmp_path / "b").fit()
    _assert_same_weights(_weights(tmp_path / "a" / ModelDir.CHECKPOINT), _weights(tmp_path / "b" / ModelDir.CHECKPOINT))
    make_trainer(tmp_path / "c", ["training.seed=1"]).fit()
    other = _weights(tmp_path / "c" / ModelDir.CHECKPOINT)
    assert not all(torch.equal(v, other[k]) for k, v in _weights(tmp_path / "a" / ModelDir.CHECKPOINT).items())


def _run_script(out: Path, *extra: str, env: dict[str, str] | None = None) -> Finished:
    """synthetic.py in a process of its own, watched by its heartbeat (a stuck run fails with its stack)."""
    return run_watched([sys.executable, str(SCRIPT), str(out), *extra], env=env)


def _run_to_end(out: Path, *extra: str) -> Finished:
    result = _run_script(out, *extra)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _log(out: Path) -> list[dict[str, str]]:
    with open(out / ModelDir.LOG) as handle:
        return list(csv.DictReader(handle))


def test_sigkill_mid_epoch_then_resume_gives_identical_weights(tmp_path):
    """The training SIGKILLs itself right after step 150 of 60-step epochs (ATTNSEG_TEST_KILL_AT, see
    attnseg.hooks): 30 steps into epoch 3, wherever the clock is. The same command with --resume repeats
    epoch 3 from its start and ends as the uninterrupted run does: same weights, same losses."""
    iterations, kill_at = 60, 150
    assert kill_at % iterations, "the kill must fall inside an epoch"
    settings = ["--set", "training.epochs=4", "--set", f"training.iterations_per_epoch={iterations}"]
    _run_to_end(tmp_path / "reference", *settings)

    victim = tmp_path / "victim"
    killed = _run_script(victim, *settings, env={**child_env(), "ATTNSEG_TEST_KILL_AT": f"train-step:{kill_at}"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert f"ATTNSEG_TEST_KILL_AT=train-step:{kill_at}: SIGKILL" in killed.stderr, killed.stderr[-3000:]
    assert "after epoch 3 iteration 30" in killed.stderr  # where the hook counted the steps
    assert torch.load(victim / ModelDir.CHECKPOINT, weights_only=True)["state"]["epoch"] == 2
    assert [row["epoch"] for row in _log(victim)] == ["1", "2"]

    resumed = _run_to_end(victim, *settings, "--resume")
    assert [line.split()[1] for line in resumed.stdout.splitlines() if line.startswith("epoch ")] == ["3/4", "4/4"]
    _assert_same_weights(_weights(tmp_path / "reference" / ModelDir.CHECKPOINT), _weights(victim / ModelDir.CHECKPOINT))
    compared = ("epoch", "train_loss", "lr", "val_dice_mean")
    assert [{k: row[k] for k in compared} for row in _log(victim)] == [
        {k: row[k] for k in compared} for row in _log(tmp_path / "reference")
    ]


def test_torchrun_two_ranks_stay_in_sync_and_only_rank0_writes(tmp_path):
    out = tmp_path / "ddp"
    command = torchrun_command(2, str(SCRIPT), str(out), "--dump-weights", "--set", "training.epochs=2")
    result = run_watched(command)  # a hang fails once no rank has beaten for STALL_S, with every rank's stack
    assert result.returncode == 0, result.stderr[-3000:]
    _assert_same_weights(
        torch.load(out / "rank0.pt", weights_only=True), torch.load(out / "rank1.pt", weights_only=True)
    )
    written = sorted(p.name for p in out.iterdir() if not p.name.startswith("rank"))
    assert written == sorted(
        ["checkpoint", "log.csv", "progress.png", "runtime.json", "tensorboard", "weights.safetensors"]
    )
    assert len(list((out / "tensorboard").iterdir())) == 1  # one event file: rank 0's
    checkpoint = torch.load(out / ModelDir.CHECKPOINT, weights_only=True)
    assert checkpoint["provenance"]["world_size"] == 2


def test_non_finite_loss_stops_with_a_clear_message_and_keeps_the_checkpoint(tmp_path):
    trainer = make_trainer(tmp_path, ["training.epochs=3"])
    trainer.fit()
    saved = _weights(tmp_path / ModelDir.CHECKPOINT)

    class ExplodingLoss(torch.nn.Module):
        def forward(self, output, target):
            return output.logits.sum() * float("nan")

    again = make_trainer(tmp_path, ["training.epochs=5"])
    again.loss_fn = ExplodingLoss()
    with pytest.raises(TrainingError, match=r"loss became nan at epoch 4, iteration 1; the last good checkpoint"):
        again.fit(resume=True)
    _assert_same_weights(saved, _weights(tmp_path / ModelDir.CHECKPOINT))


def test_preflight_rejects_labels_beyond_the_classes(tmp_path):
    trainer = make_trainer(tmp_path)
    trainer.train_data.samples[0]["label"][0, 0] = 5
    for sample in trainer.train_data.samples:
        sample["label"][0, 0] = 5
    with pytest.raises(TrainingError, match="contain value 5, but the network predicts 2 classes"):
        trainer.fit()
    assert not (tmp_path / ModelDir.CHECKPOINT).exists()


def test_early_stopping(tmp_path):
    trainer = make_trainer(tmp_path, ["training.epochs=10", "training.patience=2"])
    trainer.validate = lambda model: {"val_dice_mean": 0.5}
    state = trainer.fit()
    assert state.stopped_early and state.epoch == 3 and state.best_epoch == 1


def test_deterministic_run_takes_the_default_runtime_unmeasured_and_records_it(tmp_path):
    trainer = make_trainer(tmp_path, ["training.epochs=1"])  # make_trainer is deterministic
    assert trainer.runtime.name == "channels_last/fp32" and trainer.runtime.step_ms == {}
    assert "deterministic" in trainer.runtime.reason
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in trainer.network.parameters() if p.dim() == 4)
    trainer.fit()
    assert json.loads((tmp_path / ModelDir.RUNTIME).read_text()) == trainer.runtime.to_dict()


def test_auto_runtime_is_the_fastest_measured_and_leaves_the_model_untouched(tmp_path):
    seed_everything(0)  # make_trainer builds the same network from the same seed
    initial = build_network("attention_unet", in_channels=1, out_channels=2, features=[4, 8, 16]).state_dict()
    trainer = make_trainer(tmp_path, ["training.deterministic=false"])
    runtime = trainer.runtime
    assert set(runtime.step_ms) == {c.name for c in runtime_candidates(torch.device("cpu"))}
    assert runtime.step_ms[runtime.name] == min(runtime.step_ms.values())
    assert "fastest training step" in runtime.reason
    for key, value in trainer.network.state_dict().items():  # weights and batch-norm statistics
        assert torch.equal(value, initial[key]), key


def test_set_layout_and_bf16_precision_train_on_the_cpu(tmp_path):
    trainer = make_trainer(tmp_path, ["training.epochs=2", "training.layout=contiguous", "training.amp=bf16"])
    assert trainer.runtime.name == "contiguous/bf16" and "set:" in trainer.runtime.reason
    state = trainer.fit()
    assert all(p.is_contiguous() for p in trainer.network.parameters())
    assert all(math.isfinite(row["train_loss"]) for row in state.history)
    assert state.history[-1]["train_loss"] < state.history[0]["train_loss"]


def test_fp16_precision_is_refused_on_cpu(tmp_path):
    from attnseg.errors import ConfigError

    with pytest.raises(ConfigError, match=r"training\.amp=fp16 needs a CUDA device"):
        make_trainer(tmp_path, ["training.amp=fp16"])


def test_out_of_memory_names_the_settings_to_lower(tmp_path):
    trainer = make_trainer(tmp_path, ["data.batch_size=4"])

    class Exhausted(torch.nn.Module):
        def forward(self, output, target):
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 68719476736 bytes")

    trainer.loss_fn = Exhausted()
    with pytest.raises(TrainingError, match=r"out of memory on cpu with data\.batch_size=4; lower data\.batch_size"):
        trainer.fit()


def test_a_stalled_rank_ends_the_job_with_an_error_naming_rank_and_place(tmp_path):
    """Rank 1 stops answering in epoch 2, for a day: rank 0 gives up after training.dist_timeout, says
    where it was waiting, and torchrun stops the job. Nothing else could end it: without the timeout
    both ranks wait silently, the heartbeat stops and run_watched fails the test with their stacks."""
    out = tmp_path / "stall"
    command = torchrun_command(
        2, str(SCRIPT), str(out), "--stall", "1:1:86400",
        "--set", "training.epochs=3", "--set", "training.dist_timeout=8",
    )  # fmt: skip
    result = run_watched(command)
    assert result.returncode != 0
    assert "DistributedError: rank 0 of 2: epoch 2" in result.stderr, result.stderr[-3000:]
