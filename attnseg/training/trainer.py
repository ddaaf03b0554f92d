"""The training loop: epochs of random samples, validation on whole cases, checkpoints, logs.

The Trainer knows nothing about files or datasets beyond a map-style torch ``Dataset`` of
``{"image": (C, *S) float, "label": (*S) int}`` samples and a ``validate(model) -> metrics``
callable; ``attnseg.training.run`` builds both from a dataset folder.

Reproducibility: each epoch reseeds every generator from (seed, epoch, rank), and the sample order
comes from a generator seeded the same way. A run resumed from its last checkpoint therefore repeats
the interrupted epoch exactly, and ends with the same weights as an uninterrupted run (CPU,
deterministic mode).
"""

from __future__ import annotations

import csv
import io
import math
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from attnseg import distributed as dist_utils
from attnseg import hooks
from attnseg.distributed import DistContext
from attnseg.errors import AttnsegError
from attnseg.fileio import write_text
from attnseg.model_dir import ModelDir, provenance
from attnseg.runtime import Runtime, Threads, is_out_of_memory, runtime_candidates
from attnseg.timing import synchronize
from attnseg.training.budget import (
    FIRST_GUESS_MARGIN,
    FIRST_GUESS_WRITING,
    RECENT_EPOCHS,
    EpochCost,
    TimeBudget,
    epochs_that_fit,
    format_duration,
    refuse_if_short,
    reserve_seconds,
    shorter_epochs,
    spaced_validation,
    time_within_budget,
)
from attnseg.training.config import Config
from attnseg.training.optim import build_optimizer, build_scheduler
from attnseg.training.seeding import (
    derive_seed,
    reseed_transforms,
    rng_state,
    seed_everything,
    seed_worker,
    set_rng_state,
)
from attnseg.training.step import TrainStep, choose_runtime

Validator = Callable[[nn.Module], dict[str, float]]
SELECTION_METRIC = "val_dice_mean"


class TrainingError(AttnsegError):
    """Training had to stop (non-finite loss, out of memory, bad data)."""


@dataclass
class TrainState:
    """What a resumed run needs besides the model/optimizer states; stored in the checkpoint."""

    epoch: int = 0  # completed epochs
    best_metric: float = -math.inf
    best_epoch: int = 0
    stale_validations: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    stopped_early: bool = False


class EpochSampler(Sampler[int]):
    """``num_samples`` indices per rank from a generator seeded per (seed, epoch): a random permutation
    when the dataset is large enough (each index at most once), else draws with replacement.
    Rank r of n takes every n-th index, so ranks see different samples."""

    def __init__(self, dataset_size: int, num_samples: int, seed: int, context: DistContext) -> None:
        self.dataset_size = dataset_size
        self.num_samples = num_samples
        self.seed = seed
        self.context = context

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed)
        total = self.num_samples * self.context.world_size
        if self.dataset_size >= total:
            indices = torch.randperm(self.dataset_size, generator=generator)[:total]
        else:
            indices = torch.randint(self.dataset_size, (total,), generator=generator)
        return iter(indices[self.context.rank :: self.context.world_size].tolist())

    def __len__(self) -> int:
        return self.num_samples


class Trainer:
    """Train ``model`` with ``loss_fn`` on ``train_data``; validate with ``validate``; write ``model_dir``.

    Args:
        config: the validated configuration (optimizer, scheduler, training sections are used here).
        model: the network (on the CPU; moved to the device here).
        loss_fn: ``loss_fn(model_output, label_batch) -> scalar``.
        train_data: map-style dataset of sample dicts; indices are drawn with replacement.
        model_dir: where checkpoints, weights and logs go (only rank 0 writes).
        validate: returns metrics for the unwrapped model in eval mode; ``val_dice_mean`` selects the best
            weights. Without it, the last weights are kept.
        device, context: where to train, and the DDP context (from ``init_distributed``).
        show_progress: draw the progress bar (rank 0 only).
        runtime: memory layout and mixed precision (a resumed run passes its recorded one); None:
            chosen from ``training.layout`` and ``training.amp``, by measurement for ``auto``
            (:func:`attnseg.training.step.choose_runtime`).
        budget: a wall-clock budget for the whole run: the number of epochs (and the spacing of
            validations) is planned from measured costs so that the run ends on time (see
            :mod:`attnseg.training.budget`); ``training.epochs`` is then ignored. Every cost is read from
            the budget's clock (``budget.clock``: ``time.monotonic`` unless a test injects one).
        on_epoch_start: called with the 0-based epoch before it trains (a fine-tuning run releases
            its frozen encoder from it: attnseg.training.freeze).
        threads: the torch thread count the caller chose and why (:func:`attnseg.runtime.run_threads`),
            recorded in runtime.json with the layout and precision; None: not recorded.
    """

    def __init__(
        self,
        config: Config,
        model: nn.Module,
        loss_fn: nn.Module,
        train_data: Dataset,
        model_dir: ModelDir,
        validate: Validator | None = None,
        device: torch.device | None = None,
        context: DistContext | None = None,
        show_progress: bool = True,
        runtime: Runtime | None = None,
        budget: TimeBudget | None = None,
        on_epoch_start: Callable[[int], None] | None = None,
        threads: Threads | None = None,
    ) -> None:
        self.config = config
        self.train_cfg = config.training
        self.context = context or DistContext()
        self.device = device or torch.device("cpu")
        loss_fn = loss_fn.to(self.device)
        self.train_data = train_data
        self.model_dir = model_dir
        self.validate = validate
        self.show_progress = show_progress and self.context.is_main
        model = model.to(self.device)
        self.budget = budget  # read by the runtime's choice: with a budget, timing candidates must be worth it
        self.runtime = runtime or self._choose_runtime(model, loss_fn)
        # the layout is set before DDP wraps the model: its gradient buckets follow the parameters' strides
        self.model = dist_utils.wrap_model(self.runtime.prepare_model(model), self.context, self.device)
        self.optimizer = build_optimizer(config.optimizer, self.model.parameters())
        self.epochs = self.train_cfg.epochs  # the plan: a budget changes it as the run goes
        self.val_every = self.train_cfg.val_every
        self._validated_last_epoch = True  # nothing owed until an epoch runs without validating (_run_epoch)
        self.iterations = self.train_cfg.iterations_per_epoch
        self._validation_seconds = 0.0  # the last validation's cost (estimated until one has run)
        self._epoch_seconds: list[float] = []  # the training time of every epoch run, for the budget's plan
        self._preflight_seconds: float | None = None  # the pre-flight pass's cost: the budget's first step timing
        self.scheduler = build_scheduler(config.scheduler, self.optimizer, lambda: self.epochs)
        self.train_step = TrainStep(self.model, loss_fn, self.optimizer, self.runtime, self.train_cfg.grad_clip)
        self.scaler = self.train_step.scaler
        self.state = TrainState()
        self._writer = None
        self.on_epoch_start = on_epoch_start  # e.g. releasing a frozen encoder (attnseg.training.freeze)
        self.threads = threads

    # public ------------------------------------------------------------------------------------

    def fit(self, resume: bool = False) -> TrainState:
        if self.context.is_main:
            threads = {"threads": asdict(self.threads)} if self.threads is not None else {}
            self.model_dir.write_runtime({**self.runtime.to_dict(), **threads})
        if resume:
            self._restore()
        batch = self.preflight() if self.state.epoch == 0 or not resume else None
        if self.budget is not None:
            self._plan_budget(batch)
        try:
            while self.state.epoch < self.epochs and not self.state.stopped_early:
                self._run_epoch(self.state.epoch)
            self._validate_if_owed()
        finally:
            if self._writer is not None:
                self._writer.close()
        if self.context.is_main and self.state.best_epoch == 0:
            # no validation (--fold all), or none gave a score: the last weights are the model
            why = "no validation cases" if self.validate is None else "validation gave no score"
            self.model_dir.save_weights(self.network, {"epoch": self.state.epoch, "selected": f"last epoch ({why})"})
        return self.state

    def _validate_if_owed(self) -> None:
        """Validate the final weights when the last epoch run did not (a budget cut the plan short after
        an epoch that was not due to validate): a run with validation cases always reports a score."""
        history = self.state.history
        if self.validate is None or not history or self._validated_last_epoch or self.state.stopped_early:
            return
        epoch = self.state.epoch - 1
        started = self._clock()
        row = history[-1]
        row.update(self._validate_and_select(epoch))
        row["seconds"] += self._clock() - started
        if self.context.is_main:
            self.model_dir.save_checkpoint(self._checkpoint())
            self._write_logs(row)
            tqdm.write(f"final validation (the budget ended the run at epoch {epoch + 1}):")
            self._print_summary(row)

    @property
    def loss_fn(self) -> nn.Module:
        return self.train_step.loss_fn

    @loss_fn.setter
    def loss_fn(self, loss_fn: nn.Module) -> None:
        self.train_step.loss_fn = loss_fn

    @property
    def network(self) -> nn.Module:
        return dist_utils.unwrap(self.model)

    def _clock(self) -> float:
        """The time that epochs are measured in, for the log and the budget: the budget's clock."""
        return self.budget.clock() if self.budget is not None else time.perf_counter()

    def close(self) -> None:
        """Drop the DistributedDataParallel wrapper (it holds the process group, which must outlive it;
        see :mod:`attnseg.distributed`) and the TensorBoard writer. ``network`` stays usable."""
        self.model = self.network
        self.train_step.model = self.network
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def preflight(self) -> dict[str, torch.Tensor]:
        """One forward/backward pass on one batch before the first epoch, so a misconfigured run fails
        in seconds: wrong channels or classes, labels out of range, shapes the network rejects. Returns
        the batch."""
        batch = self._first_batch(self.network)
        self.model.train()
        started = self._clock()
        loss = self._forward_loss(batch)
        self._guard_finite(loss, "the pre-flight batch")
        loss.backward()
        self.optimizer.zero_grad(set_to_none=True)
        synchronize(self.device)
        self._preflight_seconds = self._clock() - started
        return batch

    def _first_batch(self, network: nn.Module) -> dict[str, torch.Tensor]:
        """The pre-flight batch, its labels checked against the network's classes."""
        batch = next(iter(self._loader(epoch=-1, num_samples=self.config.data.batch_size)))
        classes = getattr(network, "out_channels", None)
        top = int(batch["label"].max())
        if classes is not None and top >= classes:
            raise TrainingError(
                f"the training labels contain value {top}, "
                f"but the network predicts {classes} classes (0..{classes - 1})"
            )
        return batch

    def _choose_runtime(self, model: nn.Module, loss_fn: nn.Module) -> Runtime:
        """Layout and precision for this run (timed on the pre-flight batch when ``auto``); under DDP
        every rank takes rank 0's choice."""
        needs_batch = self.train_cfg.layout == "auto" or self.train_cfg.amp == "auto"
        batch = self._first_batch(model) if needs_batch and not self.train_cfg.deterministic else {}
        try:
            runtime = choose_runtime(self.config, model, loss_fn, batch, self.device, self.budget)
        except (RuntimeError, MemoryError) as error:
            if is_out_of_memory(error):
                raise TrainingError(self._oom_message()) from error
            raise
        if not self.context.enabled:
            return runtime
        candidates = runtime_candidates(self.device, self.train_cfg.layout, self.train_cfg.amp)
        names = [candidate.name for candidate in candidates]
        chosen = int(
            dist_utils.broadcast_number(
                names.index(runtime.name), self.context, self.device, "sharing rank 0's choice of layout and precision"
            )
        )
        return runtime if chosen == names.index(runtime.name) else replace(candidates[chosen], reason="rank 0's choice")

    # time budget ---------------------------------------------------------------------------------

    def _plan_budget(self, batch: dict[str, torch.Tensor] | None) -> None:
        """The first plan, from a training step and a validation batch timed on this machine."""
        batch = batch if batch is not None else self._first_batch(self.network)

        def train_step() -> None:
            self.model.train()
            self._forward_loss(batch).backward()
            self.optimizer.zero_grad(set_to_none=True)

        def forward() -> None:
            with torch.no_grad(), self.runtime.autocast():
                self.network.eval()(self.runtime.prepare_input(batch["image"].to(self.device)))

        step = self._time_for_budget(train_step, self._preflight_seconds) * FIRST_GUESS_MARGIN
        batches = getattr(self.validate, "batches", 0) if self.validate is not None else 0
        forward_seconds = self._time_for_budget(forward) if batches else 0.0
        self._validation_seconds = forward_seconds * batches
        cost = EpochCost(step * self.iterations, self._validation_seconds, FIRST_GUESS_WRITING)
        self._replan(cost, why="measured a training step")

    def _time_for_budget(self, fn: Callable[[], object], once: float | None = None) -> float:
        """Seconds of one call of ``fn`` (the pre-flight pass warmed it up): the median of three when one
        is cheap, else that one (:func:`~attnseg.training.budget.time_within_budget`). ``once``: a call
        already timed (the pre-flight pass, for a training step), so that a costly step is not run once more
        only to be timed (a 3D step on a CPU: a minute of a 5-minute budget)."""
        return time_within_budget(fn, self.budget, self.device, repeats=3, once=once)

    def _replan(self, cost: EpochCost, why: str, next_epoch: EpochCost | None = None) -> None:
        """Fit the remaining epochs of ``cost`` into the remaining time, and none when ``next_epoch`` (the last
        epoch's cost) no longer fits; rank 0's plan is everyone's."""
        budget = self.budget
        fixed_validation = "val_every" in self.train_cfg.model_fields_set
        val_every = spaced_validation(cost, self.train_cfg.val_every, fixed_validation)
        done = self.state.epoch
        available = budget.remaining() - reserve_seconds(budget.seconds)
        iterations = self.iterations
        if done == 0:  # too slow a machine for whole epochs: shorter ones, so the schedule still runs
            step = cost.train / iterations
            refuse_if_short(
                budget, step + cost.writing + cost.validation, "the shortest run (one step, one validation)"
            )
            iterations, cost = shorter_epochs(available, cost, iterations, val_every)
        fit = epochs_that_fit(available, cost, val_every)
        if next_epoch is not None and epochs_that_fit(available, next_epoch, val_every) == 0:
            fit = 0
        epochs = max(done + fit, 1)  # at least one epoch: a run must leave a model
        what = f"time budget ({why})"
        epochs = int(dist_utils.broadcast_number(epochs, self.context, self.device, what))
        val_every = int(dist_utils.broadcast_number(val_every, self.context, self.device, what))
        iterations = int(dist_utils.broadcast_number(iterations, self.context, self.device, what))
        # say so when the plan moves by more than an epoch or two (the median drifts by one now and then)
        moved = abs(epochs - self.epochs) > max(1, round(0.05 * self.epochs)) or epochs == done < self.epochs
        changed = moved or (val_every, iterations) != (self.val_every, self.iterations)
        self.epochs, self.val_every, self.iterations = epochs, val_every, iterations
        if self.context.is_main and (changed or done == 0):
            validation = f", validation {cost.validation:.1f} s every {val_every} epoch(s)" if cost.validation else ""
            spare = budget.remaining() - self._planned_seconds(cost, epochs - done)
            tqdm.write(
                f"time budget {format_duration(budget.seconds)}: {format_duration(budget.elapsed())} used; "
                f"an epoch of {self.iterations} steps takes {cost.train:.1f} s{validation} "
                f"({why}); plan: {epochs} epoch(s), ~{format_duration(spare)} to spare"
            )

    def _planned_seconds(self, cost: EpochCost, epochs: int) -> float:
        validations = math.ceil(epochs / self.val_every) if epochs else 0
        return epochs * (cost.train + cost.writing) + validations * cost.validation

    def _keep_within_budget(self, train: float, validation: float | None, writing: float) -> None:
        """After an epoch: plan again from the median cost of the recent epochs, and stop when the next would
        not fit at the last one's cost (validation: the last one measured; see attnseg.training.budget)."""
        if validation is not None:
            self._validation_seconds = validation
        self._epoch_seconds.append(train)
        recent = self._epoch_seconds[-RECENT_EPOCHS:]
        typical = EpochCost(statistics.median(recent), self._validation_seconds, writing)
        last = EpochCost(train, self._validation_seconds, writing)
        why = f"epoch {self.state.epoch} measured" + (f", median of the last {len(recent)}" if len(recent) > 1 else "")
        self._replan(typical, why=why, next_epoch=last)

    # one epoch ---------------------------------------------------------------------------------

    def _run_epoch(self, epoch: int) -> None:
        started = self._clock()
        if self.on_epoch_start is not None:
            self.on_epoch_start(epoch)
        seed = derive_seed(self.train_cfg.seed, epoch, self.context.rank)
        seed_everything(seed)
        if hasattr(self.train_data, "set_epoch"):  # datasets that draw their own samples per epoch
            self.train_data.set_epoch(epoch)
        else:
            reseed_transforms(self.train_data, seed)
        with dist_utils.collective(self.context, f"epoch {epoch + 1}: a training step", computing=True):
            train_loss = self._train_one_epoch(epoch)
        dist_utils.sync_buffers(self.model, self.context)
        self.scheduler.step()
        row: dict[str, float] = {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            "lr": self.optimizer.param_groups[0]["lr"],
        }
        trained = self._clock()
        last = epoch + 1 == self.epochs
        # decided from the schedule, the same on every rank (only the main rank holds the metrics)
        self._validated_last_epoch = self.validate is None or (epoch + 1) % self.val_every == 0 or last
        if self.validate is not None and self._validated_last_epoch:
            row.update(self._validate_and_select(epoch))
        validated = self._clock()
        row["seconds"] = validated - started
        self.state.history.append(row)
        self.state.epoch = epoch + 1
        if self.context.is_main:
            if (epoch + 1) % self.train_cfg.checkpoint_every == 0 or last or self.state.stopped_early:
                self.model_dir.save_checkpoint(self._checkpoint())
            self._write_logs(row)
            self._print_summary(row)
        if self.budget is not None and not last:
            validation = validated - trained if SELECTION_METRIC in row else None
            self._keep_within_budget(trained - started, validation, self._clock() - validated)

    def _train_one_epoch(self, epoch: int) -> float:
        self.model.train()
        total, steps = 0.0, 0
        loader = self._loader(epoch, self.iterations * self.config.data.batch_size)
        bar = tqdm(
            loader,
            total=len(loader),
            desc=f"epoch {epoch + 1}/{self.epochs}",
            disable=not self.show_progress,
            leave=False,
            dynamic_ncols=True,
        )
        for iteration, batch in enumerate(bar):
            loss = self._step(batch, epoch, iteration)
            hooks.progress("train-step", "after epoch", epoch + 1, "iteration", iteration + 1)  # test/diagnostic hook
            total, steps = total + loss, steps + 1
            bar.set_postfix(loss=f"{total / steps:.4f}", eta=self._total_eta(epoch, bar))
        bar.close()
        return total / max(steps, 1)

    def _step(self, batch: dict[str, torch.Tensor], epoch: int, iteration: int) -> float:
        loss = self._forward_loss(batch)
        self._guard_finite(loss, f"epoch {epoch + 1}, iteration {iteration + 1}")
        try:
            self.train_step.update(loss)
        except (RuntimeError, MemoryError) as error:
            if is_out_of_memory(error):
                raise TrainingError(self._oom_message()) from error
            raise
        return float(loss.detach())

    def _forward_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        image = batch["image"].to(self.device, non_blocking=True)
        label = batch["label"].to(self.device, non_blocking=True)
        try:
            return self.train_step.forward_loss(image, label)
        except (RuntimeError, MemoryError) as error:
            if is_out_of_memory(error):
                raise TrainingError(self._oom_message()) from error
            raise

    def _guard_finite(self, loss: torch.Tensor, where: str) -> None:
        finite = bool(torch.isfinite(loss.detach()).item())
        if dist_utils.all_ranks_true(finite, self.context, self.device, f"checking the loss at {where}"):
            return
        checkpoint = self.model_dir.file(ModelDir.CHECKPOINT)
        kept = f"the last good checkpoint is kept in {checkpoint}" if checkpoint.exists() else "no checkpoint written"
        precision = (
            f"training.amp=off (this run used {self.runtime.amp}: {self.runtime.reason or 'set'}), "
            if self.runtime.amp != "off"
            else ""
        )
        raise TrainingError(
            f"the loss became {float(loss.detach())} at {where}; {kept}. Try {precision}a lower optimizer.lr, "
            "keep training.grad_clip on, or check the data for NaN/inf values (attnseg dataset check)"
        )

    def _oom_message(self) -> str:
        data = self.config.data
        patch = f", data.patch_size={data.patch_size}" if data.patch_size else ""
        return (
            f"out of memory on {self.device} with data.batch_size={data.batch_size}{patch}; lower data.batch_size "
            "or data.patch_size (or use training.amp=auto on a GPU)"
        )

    def _total_eta(self, epoch: int, bar: tqdm) -> str:
        """Time left in the whole run: past epochs' mean duration (this epoch's pace before there is one)."""
        elapsed = bar.format_dict.get("elapsed", 0.0)
        finished = [row["seconds"] for row in self.state.history]
        per_epoch = sum(finished) / len(finished) if finished else elapsed / max(bar.n, 1) * (bar.total or 1)
        remaining = per_epoch * (self.epochs - epoch) - elapsed
        return tqdm.format_interval(max(remaining, 0))

    def _loader(self, epoch: int, num_samples: int) -> DataLoader:
        seed = derive_seed(self.train_cfg.seed, epoch + 1, 7919)  # same order on every rank, then sharded
        workers = self.config.data.num_workers
        return DataLoader(
            self.train_data,
            batch_size=self.config.data.batch_size,
            sampler=EpochSampler(len(self.train_data), num_samples, seed, self.context),
            num_workers=workers,
            worker_init_fn=seed_worker if workers else None,
            generator=torch.Generator().manual_seed(derive_seed(seed, self.context.rank)),
            pin_memory=self.device.type == "cuda",
            drop_last=False,
        )

    # validation and model selection --------------------------------------------------------------

    def _validate_and_select(self, epoch: int) -> dict[str, float]:
        metrics: dict[str, float] = {}
        improved = False
        if self.context.is_main:
            metrics = self.validate(self.network.eval())
            score = metrics.get(SELECTION_METRIC, math.nan)
            improved = not math.isnan(score) and score > self.state.best_metric
            if improved:
                self.state.best_metric, self.state.best_epoch = score, epoch + 1
                self.state.stale_validations = 0
                self.model_dir.save_weights(
                    self.network, {"epoch": epoch + 1, SELECTION_METRIC: score, "selected": f"best {SELECTION_METRIC}"}
                )
            else:
                self.state.stale_validations += 1
        patience = self.train_cfg.patience
        stop = patience is not None and self.state.stale_validations >= patience
        self.state.stopped_early = dist_utils.broadcast_flag(
            stop, self.context, self.device, f"sharing the early-stopping decision after epoch {epoch + 1}"
        )
        return metrics

    # checkpoints and logs --------------------------------------------------------------------------

    def _checkpoint(self) -> dict[str, Any]:
        return {
            "model": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "state": asdict(self.state),
            "rng": rng_state(),
            "config": self.config.to_dict(),
            "runtime": self.runtime.to_dict(),
            "provenance": {**provenance(), "world_size": self.context.world_size},
        }

    def _restore(self) -> None:
        checkpoint = self.model_dir.load_checkpoint(map_location=self.device)
        if checkpoint is None:
            raise TrainingError(f"{self.model_dir.file(ModelDir.CHECKPOINT)}: nothing to resume from")
        self.network.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.scaler.load_state_dict(checkpoint["scaler"])
        self.state = TrainState(**checkpoint["state"])
        set_rng_state(checkpoint["rng"])

    def _write_logs(self, row: dict[str, float]) -> None:
        self._write_csv()
        from attnseg.visualize.curves import plot_progress

        plot_progress(self.state.history, self.model_dir.file(ModelDir.PROGRESS))
        writer = self._tensorboard()
        for key, value in row.items():
            if key != "epoch":
                writer.add_scalar(key.replace("_", "/", 1), value, int(row["epoch"]))
        writer.flush()

    def _write_csv(self) -> None:
        columns: list[str] = []
        for row in self.state.history:
            columns += [k for k in row if k not in columns]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(self.state.history)
        write_text(self.model_dir.file(ModelDir.LOG), buffer.getvalue(), overwrite=True)

    def _tensorboard(self):
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.model_dir.file(ModelDir.TENSORBOARD)))
        return self._writer

    def _print_summary(self, row: dict[str, float]) -> None:
        parts = [f"epoch {int(row['epoch'])}/{self.epochs}", f"loss {row['train_loss']:.4f}"]
        if SELECTION_METRIC in row:
            parts.append(
                f"val dice {row[SELECTION_METRIC]:.4f} (best {self.state.best_metric:.4f} @{self.state.best_epoch})"
            )
        parts += [f"lr {row['lr']:.2e}", f"{row['seconds']:.1f} s"]
        if self.state.stopped_early:
            parts.append(f"early stop: no improvement in {self.train_cfg.patience} validations")
        tqdm.write("  ".join(parts))
