"""``attnseg train``: from a dataset folder and a configuration to a model directory.

Plan the preprocessing from the dataset's fingerprint, preprocess the fold's cases, sample slices
(2D networks) or patches (3D networks), train, validate on whole cases, and leave a ModelDir that
``attnseg predict`` can use.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from attnseg.data import (
    PatchDataset,
    Plan,
    PreprocessedCase,
    SliceDataset,
    build_augmentation,
    fingerprint_dataset,
    load_dataset,
    load_preprocessed,
    load_splits,
    make_splits,
    plan_dataset,
    preprocess_cases,
    preprocess_dataset,
    save_splits,
    split_cases,
)
from attnseg.data.check import Fingerprint
from attnseg.data.dataset import Dataset
from attnseg.data.plan import PATCH_MULTIPLE
from attnseg.data.training_fingerprint import fingerprint_training_cases, save_fingerprint
from attnseg.device import resolve_device
from attnseg.distributed import DistContext, barrier, broadcast_number, global_rank, local_rank, process_group
from attnseg.errors import ConfigError, OutputExistsError
from attnseg.fileio import exclusive_use
from attnseg.inference.postprocess import LARGEST_COMPONENT, decide, keep_largest_components, single_component_classes
from attnseg.inference.volume import predict_preprocessed
from attnseg.losses import DeepSupervisedLoss, GuidedAttentionLoss, SegmentationLoss
from attnseg.metrics.overlap import dice, overlap_counts
from attnseg.metrics.report import nan_stat
from attnseg.model_dir import ModelDir
from attnseg.networks.nets.ms_guided_attention import MultiScaleGuidedAttentionNet
from attnseg.networks.registry import build_network, get_spec
from attnseg.runtime import Runtime, Threads, run_threads, runtime_candidates
from attnseg.training.budget import (
    COARSENING_FACTORS,
    FIRST_GUESS_MARGIN,
    MIN_BUDGET_STEPS,
    MIN_COARSE_SIDE,
    STEPS_BEFORE_TRAINING,
    Clock,
    TimeBudget,
    coarsening_for_budget,
    refuse_if_short,
    shortest_run_seconds,
    smaller_patch,
    time_within_budget,
    training_seconds,
)
from attnseg.training.calibration import calibration_line, keep_calibration
from attnseg.training.config import Config, augment_config
from attnseg.training.finetune import start_finetune
from attnseg.training.init_from import with_source_plan
from attnseg.training.model_card import CardInputs, machine, write_model_card
from attnseg.training.seeding import check_seed, seed_everything, set_deterministic
from attnseg.training.step import random_batch
from attnseg.training.trainer import Trainer, TrainState

SPLITS_FILE = "splits.json"
ALL_FOLDS = "all"


@dataclass
class PreparedData:
    dataset: Dataset
    plan: Plan
    train_cases: list[PreprocessedCase]
    val_cases: list[PreprocessedCase]
    fingerprint: Fingerprint | None = None  # None when a resumed run reuses its plan
    # seconds of a training step at the plan's size, as the budget's choice of resolution estimated it; None: not
    # timed (no budget, or the resolution was not the budget's to choose)
    step_estimate: float | None = None


def train(
    config: Config,
    resume: bool = False,
    overwrite: bool = False,
    show_progress: bool = True,
    *,
    clock: Clock = time.monotonic,
    started: float | None = None,
) -> TrainState:
    """Run one training described by ``config``; returns the final training state.

    ``training.time_budget`` counts from ``started``, a reading of ``clock`` (None: now, on entering this
    function). Everything the budget measures (planning, preprocessing, choosing the runtime, training,
    validation, writing the model) is read from ``clock``; a test passes a simulated one.
    """
    budget = None
    if config.training.time_budget:
        budget = TimeBudget(config.training.time_budget, clock() if started is None else started, clock)
    if config.data.dataset is None:
        raise ConfigError("data.dataset is not set: pass --dataset PATH or set it in the config")
    if config.output is None:
        raise ConfigError("output is not set: pass --output DIR or set it in the config")
    check_seed(config.training.seed)
    model_dir = ModelDir(config.output)
    _check_source_apart(config.finetune.init_from, model_dir, resume)  # before the hold writes in --output
    with _holding(model_dir):
        _check_output(model_dir, resume, overwrite)  # under the hold: a run that ended meanwhile is seen

        set_deterministic(config.training.deterministic)
        seed_everything(config.training.seed)
        device = resolve_device(config.training.device, local_rank())
        training = config.training
        with (
            process_group(device, training.dist_timeout) as context,
            run_threads(training.threads, training.deterministic) as threads,
        ):
            return _train_in_group(config, model_dir, resume, device, context, show_progress, budget, threads)


def _holding(model_dir: ModelDir) -> contextlib.AbstractContextManager[None]:
    """The model directory held for this run: a second ``attnseg train`` on the same --output (each of
    whose checks passes while nothing is written yet) would otherwise interleave its config, weights,
    checkpoint and logs with this one's. Only rank 0 writes the directory, so only rank 0 holds it; it
    takes the hold before joining the process group, where refusing ends the run before any collective."""
    if global_rank() != 0:
        return contextlib.nullcontext()
    return exclusive_use(model_dir.path, ModelDir.TRAIN_LOCK, "`attnseg train`")


def _train_in_group(
    config: Config,
    model_dir: ModelDir,
    resume: bool,
    device: torch.device,
    context: DistContext,
    show_progress: bool,
    budget: TimeBudget | None,
    threads: Threads,
) -> TrainState:
    """The work of one rank. Everything that holds the process group (the trainer and its DDP wrapper)
    lives and dies in this function, before ``process_group`` destroys the group."""
    started = time.perf_counter()
    data = prepare_data(config, model_dir if resume else None, context, budget=budget, device=device)
    if budget is not None:  # the set-up, or one step, may not fit: say so now, not after an overrun
        refuse_if_short(budget, 0.0, "anything after the set-up (planning, preprocessing)")
        refuse_unaffordable_step(config, data, budget, device, context)
    model = build_model(config, data.plan)
    on_epoch_start = start_finetune(config, model, model_dir, resume=resume, is_main=context.is_main)
    if context.is_main:
        model_dir.write_description(
            config.to_yaml(), network_description(config, data.plan), data.plan.to_dict(), data.plan.labels
        )
        keep_training_fingerprint(model_dir, data)
    trainer = Trainer(
        config,
        model,
        build_loss(config, model),
        training_samples(config, data, context),
        model_dir,
        validate=make_validator(config, data.plan, data.val_cases, device, lcc_candidates(data)),
        device=device,
        context=context,
        show_progress=show_progress,
        budget=budget,
        runtime=recorded_runtime(config, model_dir, device) if resume else None,
        on_epoch_start=on_epoch_start,
        threads=threads,
    )
    try:
        state = trainer.fit(resume=resume)
    finally:
        trainer.close()
    if context.is_main:
        model_dir.write_postprocessing(choose_postprocessing(data, state))
        calibration = keep_calibration(model_dir, model, data.plan, data.val_cases, config.data.batch_size, device)
        if calibration is not None:
            print(calibration_line(calibration), flush=True)
        write_model_card(model_dir, card_inputs(config, data, state, time.perf_counter() - started, device))
    return state


def keep_training_fingerprint(model_dir: ModelDir, data: PreparedData) -> None:
    """``MODEL/fingerprint.json``: what the model's training cases look like (the validation cases stay
    unseen, so that they test the quality control as they test the model), for the quality control of
    its predictions (:mod:`attnseg.data.training_fingerprint`)."""
    plan = data.plan
    case_ids = [case.id for case in data.train_cases]
    fingerprint = fingerprint_training_cases(
        data.dataset, case_ids, plan.class_values, plan.class_names, plan.channel_names
    )
    save_fingerprint(model_dir.file(ModelDir.FINGERPRINT), fingerprint)


def card_inputs(
    config: Config, data: PreparedData, state: TrainState, seconds: float, device: torch.device
) -> CardInputs:
    """What MODEL_CARD.md says of this run (attnseg.training.model_card)."""
    return CardInputs(
        config=config,
        plan=data.plan,
        dataset=str(data.dataset.root),
        train_cases=[case.id for case in data.train_cases],
        val_cases=[case.id for case in data.val_cases],
        state=state,
        seconds=seconds,
        device=machine(device),
        fingerprint=data.fingerprint,
    )


def recorded_runtime(config: Config, model_dir: ModelDir, device: torch.device) -> Runtime | None:
    """The layout and precision of the run being resumed, so that it continues as it started; None when
    it ran on another kind of device or the configuration no longer allows it (then a new choice)."""
    recorded = model_dir.runtime()
    if recorded is None:
        return None
    runtime = Runtime.from_dict(recorded)
    allowed = runtime_candidates(device, config.training.layout, config.training.amp)
    return runtime if runtime.name in {candidate.name for candidate in allowed} else None


def _check_output(model_dir: ModelDir, resume: bool, overwrite: bool) -> None:
    has_run = model_dir.file(ModelDir.CHECKPOINT).exists() or model_dir.file(ModelDir.WEIGHTS).exists()
    if has_run and not (resume or overwrite):
        raise OutputExistsError(
            f"{model_dir.path} already holds a training run; pass --resume to continue it, "
            "--overwrite to start again, or choose another --output"
        )


def _check_source_apart(source: Path | None, model_dir: ModelDir, resume: bool) -> None:
    """A fine-tuning may not write into the model it starts from: with --overwrite the source would be
    replaced by its own fine-tuned copy, and the model card would name the run itself as its source."""
    if source is None or resume:
        return
    here = model_dir.path.resolve()
    if Path(source).resolve() == here or Path(source).resolve().is_relative_to(here):
        raise ConfigError(
            f"finetune.init_from: {source} lies in --output {model_dir.path}, which this run writes: the source "
            "model would be replaced by the fine-tuned one; choose another --output"
        )


def prepare_data(
    config: Config,
    resume_from: ModelDir | None = None,
    context: DistContext | None = None,
    *,
    budget: TimeBudget | None = None,
    device: torch.device | None = None,
) -> PreparedData:
    """Load the dataset, plan (or reuse the plan of the run being resumed), split and preprocess:
    in memory, or once into ``data.cache`` (memory-mapped afterwards). With a time ``budget``, a 2D plan
    left to attnseg may take a coarser in-plane spacing (:func:`plan_for_budget`).

    Under DDP every rank prepares the same data (the splits are deterministic); only rank 0 writes.
    """
    context = context or DistContext()
    dataset = load_dataset(config.data.dataset)
    fingerprint, step_estimate = None, None
    if resume_from is not None and resume_from.file(ModelDir.PLAN).exists():
        plan = resume_from.load_plan()
    elif config.finetune.keep_source_plan and config.finetune.init_from is not None:
        fingerprint = fingerprint_dataset(dataset)
        plan = plan_with_source_spacing(config, dataset, fingerprint)
    else:
        fingerprint = fingerprint_dataset(dataset)
        plan = plan_from_config(config, dataset, fingerprint)
        if budget is not None and budget_may_choose_resolution(config, plan):
            device = device or torch.device("cpu")
            plan, step_estimate = plan_for_budget(config, dataset, fingerprint, plan, budget, device, context)
    split = fold_split(dataset, config.data.fold, config.output if context.is_main else None)
    case_ids = split["train"] + split["val"]
    if config.data.cache is None:
        cases = preprocess_cases(dataset, plan, case_ids)
    else:
        if context.is_main:
            preprocess_dataset(dataset, plan, config.data.cache, case_ids=case_ids, skip_existing=True)
        barrier(context, "waiting for rank 0 to fill data.cache")
        cases = load_preprocessed(config.data.cache, case_ids)
    train_cases, val_cases = split_cases(cases, split)
    return PreparedData(dataset, plan, train_cases, val_cases, fingerprint, step_estimate)


def plan_from_config(
    config: Config,
    dataset: Dataset,
    fingerprint: Fingerprint,
    target_spacing: tuple[float | None, ...] | None = None,
) -> Plan:
    """The plan for ``config``'s data settings; ``target_spacing`` replaces ``data.target_spacing``."""
    return plan_dataset(
        dataset,
        spatial_dims=config.network.spatial_dims,
        fingerprint=fingerprint,
        target_spacing=target_spacing or config.data.target_spacing,
        slice_axis=config.data.slice_axis,
        patch_size=config.data.patch_size,
        normalization=normalization_overrides(config.data.normalization, dataset.num_channels or 1),
        patch_multiple=patch_multiple(config),
    )


def plan_with_source_spacing(config: Config, dataset: Dataset, fingerprint: Fingerprint) -> Plan:
    """``finetune.keep_source_plan``: the dataset's plan at the source model's spacing, with its
    normalisation (attnseg.training.init_from.with_source_plan)."""
    source = ModelDir(config.finetune.init_from).load_plan() if config.finetune.init_from.is_dir() else None
    spacing = source.target_spacing if source is not None else None
    plan = plan_from_config(config, dataset, fingerprint, spacing)
    return with_source_plan(plan, config.finetune.init_from)


def budget_may_choose_resolution(config: Config, plan: Plan) -> bool:
    """A network (2D or 3D) whose spacing and slice or patch size the user left to the plan."""
    return config.data.target_spacing is None and config.data.patch_size is None


def plan_for_budget(
    config: Config,
    dataset: Dataset,
    fingerprint: Fingerprint,
    plan: Plan,
    budget: TimeBudget,
    device: torch.device,
    context: DistContext,
) -> tuple[Plan, float | None]:
    """``plan``, or the same plan at a coarser in-plane spacing when fewer than MIN_BUDGET_STEPS training
    steps would fit in ``budget`` at its own (attnseg.training.budget), and the estimated seconds of a
    training step at the chosen plan's size (None when nothing was timed). A step is timed on random data
    at the coarsest candidate's slice size on this machine (the cheapest to time: a few seconds of the
    budget; in 3D on a patch of half its side, scaled by voxels), and every candidate is costed from it by its
    slices' pixels."""
    factors = [f for f in COARSENING_FACTORS if f == 1 or min(plan.patch_size) / f >= MIN_COARSE_SIDE]
    if len(factors) == 1:  # nothing to choose: no step is spent timing it
        return plan, None
    candidates = {factor: _coarsened(config, dataset, fingerprint, plan, factor) for factor in factors}
    timed = candidates[max(candidates)]
    costs = {f: math.prod(c.patch_size) / math.prod(timed.patch_size) for f, c in candidates.items()}
    # a 3D step even at the coarsest spacing can take minutes on a CPU: estimated from a smaller patch
    timing = estimated_step_seconds if plan.spatial_dims == 3 else _step_seconds
    step = timing(config, timed, device, budget)
    seconds = training_seconds(budget)
    factor = coarsening_for_budget(seconds, step, costs)
    factor = broadcast_number(factor, context, device, "time budget (resolution)")
    chosen = candidates[factor]  # exact: the broadcast carries a float64
    if context.is_main:
        full = step * costs[1.0]
        reason = f"~{seconds / full:.0f} steps of ~{full:.2f} s fit at the data's spacing"
        if factor > 1:
            reason += f", fewer than {MIN_BUDGET_STEPS}"
        spacing = " x ".join(f"{s:g}" for s in chosen.target_spacing if s is not None)
        where = "mm in-plane, slices" if chosen.spatial_dims == 2 else "mm, patches"
        print(
            f"time budget: {reason}; training at {spacing} {where} of "
            f"{' x '.join(map(str, chosen.patch_size))} (~{seconds / (step * costs[factor]):.0f} steps)",
            flush=True,
        )
    return chosen, step * costs[factor] * FIRST_GUESS_MARGIN


def _coarsened(config: Config, dataset: Dataset, fingerprint: Fingerprint, plan: Plan, factor: float) -> Plan:
    """``plan`` with its spacing ``factor`` times coarser. An axis already coarser than the others (3D
    thick slices) is not coarsened beyond the finest axis's new spacing: 3 x 3 x 10 mm at 2 is 6 x 6 x 10."""
    if factor == 1:
        return plan
    given = [s for s in plan.target_spacing if s is not None]
    cap = max(max(given), min(given) * factor) if plan.spatial_dims == 3 else math.inf
    spacing = tuple(None if s is None else round(min(s * factor, max(s, cap)), 4) for s in plan.target_spacing)
    return plan_from_config(config, dataset, fingerprint, spacing)


def _step_seconds(config: Config, plan: Plan, device: torch.device, budget: TimeBudget) -> float:
    """A forward and backward pass of the configured network and loss on a random batch of the plan's
    size; the random number generators are left as they were, so the run is the one it would be. The
    first call (warm-up included) is the answer when it costs more than 1% of ``budget``: timing must not
    spend the budget it plans; else the median of two more."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        model = build_model(config, plan).to(device).train()
        loss_fn = build_loss(config, model).to(device)
        shape = (config.data.batch_size, plan.num_channels, *plan.patch_size)
        image, label = random_batch(shape, plan.num_classes, device)

        def step() -> None:
            model.zero_grad(set_to_none=True)
            loss_fn(model(image), label).backward()

        return time_within_budget(step, budget, device, repeats=2)


def refuse_unaffordable_step(
    config: Config, data: PreparedData, budget: TimeBudget, device: torch.device, context: DistContext
) -> None:
    """Refuse ``budget`` (ConfigError) before a whole training step is spent when the shortest run
    (:func:`~attnseg.training.budget.shortest_run_seconds`) does not fit in what is left of it. A 3D step of
    128³ on two busy cores can take a minute: measured whole, as the runtime's choice and the plan measure
    it, it would overrun a short budget by that minute before the run knew. The step is the resolution
    choice's estimate, else :func:`estimated_step_seconds`; rank 0's estimate is every rank's."""
    step, how = data.step_estimate, "from the resolution's timing"
    if step is None:
        step = estimated_step_seconds(config, data.plan, device, budget) * FIRST_GUESS_MARGIN
        how = f"from a step of {' x '.join(map(str, smaller_patch(data.plan.patch_size, patch_multiple(config))))}"
    step = broadcast_number(step, context, device, "time budget (a training step's estimate)")
    batches = validation_batches(data.plan, data.val_cases, config.data.batch_size)
    size = " x ".join(map(str, data.plan.patch_size))
    what = (
        f"the shortest run ({STEPS_BEFORE_TRAINING} steps of {size} measured before training, one trained, "
        f"one validation; a step estimated at ~{step:.1f} s {how})"
    )
    refuse_if_short(budget, shortest_run_seconds(step, batches), what)


def estimated_step_seconds(config: Config, plan: Plan, device: torch.device, budget: TimeBudget) -> float:
    """Seconds of a forward and backward pass at ``plan``'s size, from one timed on a patch of half its
    side (:func:`~attnseg.training.budget.smaller_patch`) and scaled by voxels: a few seconds to time
    whatever the plan's size (a whole 3D step on a busy CPU took minutes). Rough: on the 3D head of
    docs/generalisation.md it was within ~15% of the whole step, either way."""
    small = smaller_patch(plan.patch_size, patch_multiple(config))
    step = _step_seconds(config, replace(plan, patch_size=small), device, budget)
    return step * math.prod(plan.patch_size) / math.prod(small)


def patch_multiple(config: Config) -> int:
    """The multiple the automatic patch size is rounded to: the plan's 16, or the network's own larger
    one where its class fixes it (``size_multiple``; the multi-scale guided network pads to 32), so that
    training patches and inference windows are real data, not padding added inside the network."""
    multiple = getattr(get_spec(config.network.name).cls, "size_multiple", None)
    return max(PATCH_MULTIPLE, multiple) if isinstance(multiple, int) else PATCH_MULTIPLE


def normalization_overrides(schemes: str | list[str] | None, channels: int) -> dict[int, str] | None:
    """``data.normalization`` as plan_dataset takes it: channel index -> scheme."""
    if schemes is None:
        return None
    if isinstance(schemes, str):
        return dict.fromkeys(range(channels), schemes)
    if len(schemes) != channels:
        raise ConfigError(f"data.normalization lists {len(schemes)} schemes for a dataset of {channels} channel(s)")
    return dict(enumerate(schemes))


def fold_split(dataset: Dataset, fold: int | str, output: Path | None) -> dict[str, list[str]]:
    """The fold from the dataset's splits.json, or from 5 case-level folds made when the dataset has
    none (saved as ``output``/splits.json when ``output`` is given). ``"all"``: every case trains and
    none validates (nnU-Net's ``fold all``)."""
    if fold == ALL_FOLDS:
        return {"train": list(dataset.case_ids), "val": []}
    cases = len(dataset.case_ids)
    if dataset.splits_path.exists():
        splits = load_splits(dataset.splits_path, dataset.case_ids)
        source = dataset.splits_path
    else:
        if cases < 2:
            raise ConfigError(
                f"{dataset.root} has {cases} labelled case: too few to hold one out for validation; "
                "train on it with --fold all (no validation; the last epoch's weights are kept)"
            )
        splits = make_splits(dataset.case_ids, folds=min(5, cases))
        source = Path(output) / SPLITS_FILE if output is not None else Path(SPLITS_FILE)
        if output is not None and not source.exists():
            save_splits(source, splits)
    if not 0 <= int(fold) < len(splits):
        raise ConfigError(
            f"data.fold={fold}, but {source} has folds 0..{len(splits) - 1} ({cases} cases); "
            "or --fold all to train on every case without validation"
        )
    return splits[int(fold)]


def network_description(config: Config, plan: Plan) -> dict:
    kwargs = {**config.network.kwargs(), "in_channels": plan.num_channels, "out_channels": plan.num_classes}
    return {"name": config.network.name, "kwargs": kwargs}


def build_model(config: Config, plan: Plan) -> nn.Module:
    description = network_description(config, plan)
    return build_network(description["name"], **description["kwargs"])


def build_loss(config: Config, model: nn.Module) -> nn.Module:
    """The configured segmentation loss, wrapped for the network's outputs: deep supervision for the
    U-Net family, the guided-attention loss (segmentation on every head + latent consistency +
    reconstruction) for the multi-scale guided network."""
    loss = config.loss
    segmentation = SegmentationLoss(
        loss.name,
        include_background=loss.include_background,
        smooth=loss.smooth,
        class_weights=loss.class_weights,
    )
    if isinstance(model, MultiScaleGuidedAttentionNet):
        return GuidedAttentionLoss(
            guided_weight=loss.guided_weight,
            recon_weight=loss.reconstruction_weight,
            segmentation=segmentation,
            fine_weight=loss.fine_weight,
        )
    return DeepSupervisedLoss(segmentation, loss.deep_supervision_weights)


def training_samples(config: Config, data: PreparedData, context: DistContext) -> torch.utils.data.Dataset:
    """Random slices (2D) or patches (3D), as many per epoch as the trainer consumes on all ranks."""
    plan = data.plan
    augmentation = augment_config(config.data.augmentation)
    options = {
        "random": True,
        "samples_per_epoch": config.training.iterations_per_epoch * config.data.batch_size * context.world_size,
        "foreground_fraction": config.data.foreground_fraction,
        "seed": config.training.seed,
        "transform": build_augmentation(plan.spatial_dims, augmentation) if augmentation else None,
    }
    if plan.spatial_dims == 2:
        return SliceDataset.from_plan(data.train_cases, plan, **options)
    return PatchDataset.from_plan(data.train_cases, plan, **options)


def lcc_candidates(data: PreparedData) -> list[int]:
    """Classes that are one connected component in every training label: keeping only the largest
    component of the prediction may help them (attnseg.inference.postprocess)."""
    return single_component_classes((case.label for case in data.train_cases), data.plan.num_classes)


def choose_postprocessing(data: PreparedData, state: TrainState) -> dict:
    """postprocessing.json: the classes whose largest component alone the predictor keeps, and why."""
    names = data.plan.class_names
    candidates = [names[k] for k in lcc_candidates(data)]
    selected = next((row for row in state.history if row["epoch"] == state.best_epoch), None)
    kept = decide(candidates, selected if data.val_cases else None)
    return {
        LARGEST_COMPONENT: kept,
        "candidates": candidates,
        "decided_on": "validation" if data.val_cases else "training labels",
    }


def make_validator(
    config: Config, plan: Plan, cases: list[PreprocessedCase], device: torch.device, lcc: list[int] | None = None
):
    """Dice per class on whole validation cases (on the preprocessed grid): 2D networks run every
    slice and the slices are reassembled into the volume; 3D networks run by sliding window. For the
    classes in ``lcc`` also the Dice with the largest connected component only (``val_dice_<name>_
    largest_component``), from which post-processing is chosen."""
    if not cases:
        return None
    names = {index: name for index, name in enumerate(plan.class_names) if index > 0}
    lcc = lcc or []

    def validate(model: nn.Module) -> dict[str, float]:
        scores: dict[str, list[float]] = {}
        for case in cases:
            probabilities = predict_preprocessed(
                model, case.image, plan, batch_size=config.data.batch_size, device=device
            )
            prediction = probabilities.argmax(0).numpy()
            reference = np.asarray(case.label)
            largest = keep_largest_components(prediction, lcc) if lcc else prediction
            for index, name in names.items():
                scores.setdefault(f"val_dice_{name}", []).append(_dice(prediction, reference, index))
                if index in lcc:
                    key = f"val_dice_{name}_{LARGEST_COMPONENT}"
                    scores.setdefault(key, []).append(_dice(largest, reference, index))
        # a class absent from every validation case has no Dice: NaN, skipped by the mean
        metrics = {key: nan_stat(np.nanmean, np.asarray(values)) for key, values in scores.items()}
        metrics["val_dice_mean"] = nan_stat(np.nanmean, np.array([metrics[f"val_dice_{n}"] for n in names.values()]))
        return metrics

    validate.batches = validation_batches(plan, cases, config.data.batch_size)  # what the time budget plans with
    return validate


def _dice(prediction: np.ndarray, reference: np.ndarray, index: int) -> float:
    return dice(overlap_counts(prediction == index, reference == index))


def validation_batches(plan: Plan, cases: list[PreprocessedCase], batch_size: int) -> int:
    """Forward passes of ``batch_size`` one validation runs: slices (2D) or sliding windows at half overlap (3D)."""
    total = 0
    for case in cases:
        shape = case.spatial_shape
        if plan.spatial_dims == 2:
            total += math.ceil(shape[plan.slice_axis if plan.slice_axis is not None else 0] / batch_size)
        else:
            windows = math.prod(max(1, math.ceil(2 * s / p) - 1) for s, p in zip(shape, plan.patch_size, strict=True))
            total += math.ceil(windows / batch_size)
    return total
