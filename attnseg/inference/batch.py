"""Predict many scans: each case exactly once, shared out over every process ``torchrun`` started.

    torchrun --nproc_per_node=4 -m attnseg predict -m MODEL -i SCANS -o OUT          # 4 GPUs
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d \\
             --rdzv_endpoint=HOST:29500 -m attnseg predict -m MODEL -i SCANS -o OUT  # 2 machines

A run, on every rank (one process without torchrun):

1. **List** the cases (rank 0 only, then broadcast: ranks never disagree about a folder that changes
   while they start) and their output paths.
2. **Survey** them from headers, a stripe per rank: each case's size (voxels) and which of its outputs
   this run writes (:func:`~attnseg.inference.cases.survey_case`: ``--skip-existing`` keeps complete
   outputs). The surveys are gathered, so every rank knows the remaining work.
3. **Predict**, sharing the work out by longest processing time first: the remaining cases are sorted
   by size, largest first, and each rank claims the next one from a counter shared through the
   process group's store (:class:`~attnseg.distributed.SharedCounter`) whenever it is free. That is
   Graham's LPT list scheduling with the real running times, so ranks end within about one small case
   of each other even when GPUs or disks differ; a static split by count, or even by size, leaves the
   run waiting for its slowest rank. Within a rank three stages overlap: background threads read and
   preprocess the next cases (:func:`~attnseg.inference.prefetch.prefetch`, ``num_workers``), the
   calling thread runs the networks, and a writer thread puts the previous case back on its grid and
   writes it. Memory stays bounded: ``num_workers`` cases loading, one in the networks, one writing.
4. **Report**: a case that fails (an unreadable scan, a wrong channel count, an output in the way)
   is reported at once by the rank that met it, and the rank goes on. At the end every rank's results
   are gathered (with the process group's timeout) and rank 0 prints the summary: cases predicted,
   skipped and failed, and cases per minute.

Every output is written under a hidden temporary name and renamed into place once complete
(:func:`~attnseg.data.io.write_image`, :func:`~attnseg.data.dicom.write_dicom_series`), the
probabilities before the mask, so a killed run never leaves a half-written output that looks done, and
``--skip-existing`` resumes it: only what is missing is predicted.
"""

from __future__ import annotations

import sys
import time
import traceback
import uuid
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from attnseg.data import read_case, write_image
from attnseg.data.dicom import read_dicom_series
from attnseg.data.io import reading
from attnseg.distributed import (
    DistContext,
    SharedCounter,
    all_gather_objects,
    broadcast_object,
    process_group,
)
from attnseg.errors import AttnsegError, ConfigError, DataError
from attnseg.inference.cases import (
    CaseOutputs,
    CaseSurvey,
    InputCase,
    existing_outputs_error,
    find_cases,
    output_paths,
    survey_case,
)
from attnseg.inference.prefetch import prefetch
from attnseg.inference.qc import CaseQC
from attnseg.inference.qc_report import qc_summary, write_qc
from attnseg.inference.steps import PreparedImage, StepwisePredictor

# How long ranks wait for each other by default (s). The end of a run waits for the slowest rank's last
# few cases, so this must exceed a few cases' time; it is PyTorch's own default for gloo.
PREDICT_TIMEOUT_S = 1800.0


@dataclass(frozen=True)
class CaseFailure:
    """A case that could not be predicted: why, and which rank met it (None: found before any ran)."""

    case_id: str
    message: str
    rank: int | None = None

    def __str__(self) -> str:
        where = f" (rank {self.rank})" if self.rank is not None else ""
        return f"{self.case_id}{where}: {self.message}"


@dataclass
class _RankResult:
    """What one rank did; gathered to every rank at the end."""

    rank: int
    predicted: int = 0
    written: list[tuple[int, str]] = field(default_factory=list)  # (case index, mask path)
    failures: list[tuple[int, CaseFailure]] = field(default_factory=list)
    qc: list[tuple[int, CaseQC]] = field(default_factory=list)  # (case index, quality control)


@dataclass
class PredictionReport:
    """The outcome of a run over many cases (the same on every rank).

    Attributes:
        found: cases found in the inputs.
        written: masks written by this run (every rank's), in case order.
        skipped: case ids whose outputs were all complete already (``skip_existing``).
        failures: every case that failed, in case order.
        per_rank: cases predicted by each rank.
        seconds: wall time of the predictions, from the first claim to the last rank's end.
        survey_seconds: time spent listing and sizing the cases before.
        is_main: this process is rank 0 (the one that prints).
        qc: the quality control of every case predicted (every rank's), in case order; empty when the
            predictor has none (see :mod:`attnseg.inference.qc`).
    """

    found: int
    written: list[Path]
    skipped: list[str]
    failures: list[CaseFailure]
    per_rank: list[int]
    seconds: float
    survey_seconds: float
    is_main: bool = True
    qc: list[CaseQC] = field(default_factory=list)

    @property
    def predicted(self) -> int:
        return sum(self.per_rank)

    @property
    def cases_per_minute(self) -> float:
        return 60.0 * self.predicted / self.seconds if self.seconds > 0 else float("nan")

    def summary(self, output: str | Path | None = None) -> str:
        """What happened, for a person: masks written, speed, skipped and failed cases (each with its reason)."""
        where = f" to {output}" if output is not None else ""
        processes = f" on {len(self.per_rank)} processes" if len(self.per_rank) > 1 else ""
        lines = [f"wrote {len(self.written)} mask(s){where}"]
        if self.predicted:
            spread = f" (per process: {', '.join(map(str, self.per_rank))})" if len(self.per_rank) > 1 else ""
            lines[0] += (
                f": {self.predicted} case(s) in {self.seconds:.1f} s{processes}, "
                f"{self.cases_per_minute:.1f} cases/min{spread}"
            )
        lines[0] += f"; sizing {self.found} case(s) took {self.survey_seconds:.1f} s"
        if self.qc:
            counts = qc_summary(self.qc)["verdicts"]
            lines.append(
                f"quality control: {counts['ok']} ok, {counts['check']} to check, {counts['fail']} failed "
                "(qc.csv lists them, worst first)"
            )
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} case(s) whose outputs were complete")
        if self.failures:
            lines.append(f"{len(self.failures)} case(s) FAILED:")
            lines += [f"  {failure}" for failure in self.failures]
        return "\n".join(lines)

    def raise_for_failures(self) -> None:
        """Raise :class:`DataError` listing the failed cases, if any."""
        if self.failures:
            shown = "; ".join(str(f) for f in self.failures[:5])
            more = f"; and {len(self.failures) - 5} more" if len(self.failures) > 5 else ""
            raise DataError(f"{len(self.failures)} of {self.found} case(s) failed: {shown}{more}")


def predict_cases(
    predictor: StepwisePredictor,
    inputs: str | Path | Sequence[str | Path],
    output: str | Path,
    *,
    overwrite: bool = False,
    skip_existing: bool = False,
    save_probabilities: bool = False,
    output_ending: str | None = None,
    num_workers: int | None = None,
    progress: bool = True,
    dist_timeout_s: float = PREDICT_TIMEOUT_S,
) -> PredictionReport:
    """Segment every case in ``inputs`` into ``output``, shared out over the ranks of ``torchrun``.

    Args:
        predictor: the models, already on this rank's device: a
            :class:`~attnseg.inference.predictor.Predictor` (any :class:`~attnseg.inference.steps.StepwisePredictor`).
        inputs, output, save_probabilities, output_ending: see
            :meth:`~attnseg.inference.predictor.Predictor.predict_files`.
        overwrite: replace existing outputs. Without it (and without ``skip_existing``) any existing
            output stops the run before any case is read.
        skip_existing: keep the outputs that exist and are complete; predict what is missing.
        num_workers: background threads per rank that read and preprocess the next cases (None: 1 on a
            CPU, 2 on a GPU; 0: none, everything in turn).
        progress: a progress bar on rank 0 (all ranks' cases, and cases per minute).
        dist_timeout_s: how long a rank waits for the others at the start and at the end.

    Raises:
        OutputExistsError: outputs exist and neither ``overwrite`` nor ``skip_existing`` was given.
        DataError, ConfigError: the inputs cannot be listed (missing, unsupported, ambiguous names).
        DistributedError: another rank died or stalled (names this rank and what it waited for).
    """
    if num_workers is not None and num_workers < 0:
        raise ConfigError(f"num_workers must be 0 or more, got {num_workers}")
    if num_workers is None:
        num_workers = 2 if predictor.device.type == "cuda" else 1
    with process_group(predictor.device, dist_timeout_s, backend="gloo", timeout_option="--dist-timeout") as context:
        started = time.monotonic()
        plan = _plan(
            predictor, inputs, Path(output), output_ending, save_probabilities, overwrite, skip_existing, context
        )
        surveyed = time.monotonic()
        bar = tqdm(total=len(plan.order), desc="predict", unit="case", disable=not (progress and context.is_main))
        try:
            done = _RunOnRank(predictor, plan, overwrite, context, bar).run(num_workers)
            results = all_gather_objects(done, context, "gathering every rank's results at the end of the run")
            bar.update(len(plan.order) - bar.n)  # the other ranks' last cases
        finally:
            bar.close()
        finished = time.monotonic()
    report = _report(plan, results, finished - surveyed, surveyed - started, context.is_main)
    if report.qc and report.is_main:
        write_qc(output, report.qc, {"cases_found": report.found})
    return report


def _report(
    plan: _Plan, results: list[_RankResult], seconds: float, survey_seconds: float, is_main: bool
) -> PredictionReport:
    """Every rank's results in one report, masks and failures in case order."""
    written = sorted(item for result in results for item in result.written)
    failures = plan.problems + [item for result in results for item in result.failures]
    return PredictionReport(
        found=len(plan.cases),
        written=[Path(path) for _, path in written],
        skipped=[plan.cases[i].case_id for i, s in enumerate(plan.surveys) if not s.to_write and s.problem is None],
        failures=[failure for _, failure in sorted(failures, key=lambda item: item[0])],
        per_rank=[result.predicted for result in results],
        seconds=seconds,
        survey_seconds=survey_seconds,
        is_main=is_main,
        qc=[case for _, case in sorted((item for r in results for item in r.qc), key=lambda item: item[0])],
    )


@dataclass
class _Plan:
    """The run, the same on every rank: the cases, their outputs and surveys, and the claim order."""

    cases: list[InputCase]
    outputs: list[CaseOutputs]
    surveys: list[CaseSurvey]
    order: list[int]  # the cases to predict, in the order the ranks claim them
    problems: list[tuple[int, CaseFailure]]  # cases that cannot run (outputs in the way)
    run_id: str  # fresh for every run: the keys of its shared counters


def _plan(
    predictor: StepwisePredictor,
    inputs: str | Path | Sequence[str | Path],
    output: Path,
    output_ending: str | None,
    save_probabilities: bool,
    overwrite: bool,
    skip_existing: bool,
    context: DistContext,
) -> _Plan:
    """List the cases (rank 0, sent to all), survey them (a stripe per rank, gathered), order them."""
    listing = None
    if context.is_main:
        listing = _list_cases(predictor, inputs, output, output_ending, save_probabilities)
    listing = broadcast_object(listing, context, "receiving the list of cases from rank 0")
    if isinstance(listing, AttnsegError):
        raise listing
    cases, outputs, run_id = listing
    surveys = _survey(cases, outputs, overwrite, skip_existing, context)
    problems = [(i, CaseFailure(cases[i].case_id, s.problem)) for i, s in enumerate(surveys) if s.problem]
    if problems and not skip_existing:
        raise existing_outputs_error([failure.message for _, failure in problems])
    order = largest_first([s.voxels for s in surveys], [i for i, s in enumerate(surveys) if s.to_write])
    return _Plan(cases, outputs, surveys, order, problems, run_id)


def largest_first(sizes: Sequence[int], todo: Iterable[int]) -> list[int]:
    """The cases ``todo`` (indices into ``sizes``), largest first, ties in case order: the order in which
    the ranks claim them (longest processing time first)."""
    return sorted(todo, key=lambda i: (-sizes[i], i))


def _list_cases(
    predictor: StepwisePredictor,
    inputs: str | Path | Sequence[str | Path],
    output: Path,
    ending: str | None,
    probabilities: bool,
) -> tuple[list[InputCase], list[CaseOutputs], str] | AttnsegError:
    """The cases, their outputs and a fresh run id (the shared counters' keys); or the user's error, which
    rank 0 sends to every rank so that all of them stop with it."""
    try:
        cases = find_cases(inputs, predictor.num_channels, getattr(predictor, "channel_names", None))
        default = getattr(predictor, "dicom_output_format", None)  # the model's choice for DICOM inputs
        endings = [ending or (default if case.is_dicom else None) for case in cases]
        outputs = [output_paths(case, output, e, probabilities) for case, e in zip(cases, endings, strict=True)]
        return cases, outputs, uuid.uuid4().hex
    except AttnsegError as error:
        return error


def _survey(
    cases: list[InputCase], outputs: list[CaseOutputs], overwrite: bool, skip_existing: bool, context: DistContext
) -> list[CaseSurvey]:
    """Every case's survey; each rank reads the headers of one stripe, then all are gathered."""
    stripe = {
        i: survey_case(cases[i], outputs[i], overwrite, skip_existing)
        for i in range(context.rank, len(cases), context.world_size)
    }
    merged: dict[int, CaseSurvey] = {}
    for part in all_gather_objects(stripe, context, "gathering the sizes and outputs of the cases"):
        merged.update(part)
    return [merged[i] for i in range(len(cases))]


class _RunOnRank:
    """One rank's share of the predictions: claim, load (background), predict, write (background)."""

    def __init__(
        self, predictor: StepwisePredictor, plan: _Plan, overwrite: bool, context: DistContext, bar: tqdm
    ) -> None:
        self.predictor = predictor
        self.plan = plan
        self.overwrite = overwrite
        self.context = context
        self.claimed = SharedCounter(f"attnseg/predict/{plan.run_id}/claimed", context)
        self.finished = SharedCounter(f"attnseg/predict/{plan.run_id}/finished", context)
        self.result = _RankResult(context.rank)
        self.bar = bar  # rank 0's shows every rank's finished cases

    def run(self, num_workers: int) -> _RankResult:
        writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="attnseg-writer")
        writing: tuple[int, Future[Path | None]] | None = None
        try:
            for index, loaded in prefetch(self._claims(), self._load, num_workers):
                try:
                    prepared = loaded.result()
                    means = self.predictor.forward(prepared)
                except Exception as error:  # this case fails; the rank goes on with the next one
                    self._failed(index, error)
                    continue
                if writing is not None:  # at most one case being written: memory stays bounded
                    self._collect(*writing)
                writing = (index, writer.submit(self._finish, index, prepared, means))
            if writing is not None:
                self._collect(*writing)
        finally:
            writer.shutdown(wait=True)
        return self.result

    def _claims(self) -> Iterator[int]:
        """The cases this rank claims, one at a time, until none is left (on every rank's counter)."""
        order = self.plan.order
        while (position := self.claimed.add(1) - 1) < len(order):
            yield order[position]

    def _load(self, index: int) -> PreparedImage:
        """Read and preprocess one case (in a loader thread)."""
        case = self.plan.cases[index]
        paths = case.paths
        if case.series_uid is not None:  # one series among several in its folder
            with reading(paths[0], "DICOM series"):
                image = read_dicom_series(paths[0], case.series_uid)
        else:
            image = read_case(paths, one_channel_per_file=False, channels=self.predictor.num_channels)
        return self.predictor.prepare(image)

    def _finish(self, index: int, prepared: PreparedImage, means: list[torch.Tensor]) -> Path | None:
        """Back to the image's grid, then the outputs this run writes, the mask last (in the writer thread)."""
        outputs, to_write = self.plan.outputs[index], self.plan.surveys[index].to_write
        # without probabilities to write, the predictor keeps them only if its quality control needs them
        mask, probabilities = self.predictor.finish(prepared, means, outputs.probabilities in to_write)
        self._assess(index, prepared, mask, probabilities)
        if outputs.probabilities in to_write:
            write_image(outputs.probabilities, probabilities, prepared.image.geometry, overwrite=self.overwrite)
        if outputs.mask not in to_write:
            return None
        self.predictor.write_mask(outputs.mask, mask, prepared.image, self.overwrite, outputs.dicom)
        return outputs.mask

    def _assess(self, index: int, prepared: PreparedImage, mask: np.ndarray, probabilities: np.ndarray | None) -> None:
        """The case's quality control, when the predictor has one; a check that breaks is reported and
        costs the case nothing (its mask is still written)."""
        assess = getattr(self.predictor, "assess", None)
        if assess is None:
            return
        case_id = self.plan.cases[index].case_id
        try:
            result = assess(case_id, prepared, mask, probabilities)
        except Exception as error:
            tqdm.write(
                f"attnseg: case {case_id}: quality control failed ({type(error).__name__}: {error})", file=sys.stderr
            )
            return
        if result is not None:
            self.result.qc.append((index, result))

    def _collect(self, index: int, writing: Future[Path | None]) -> None:
        try:
            mask = writing.result()
        except Exception as error:
            self._failed(index, error)
            return
        if mask is not None:
            self.result.written.append((index, str(mask)))
        self.result.predicted += 1
        self._advance()

    def _failed(self, index: int, error: Exception) -> None:
        """Report the failure now (the run goes on) and keep it for the summary."""
        message = str(error) if isinstance(error, AttnsegError) else f"{type(error).__name__}: {error}"
        rank = self.context.rank if self.context.enabled else None
        failure = CaseFailure(self.plan.cases[index].case_id, message, rank)
        self.result.failures.append((index, failure))
        where = f"rank {rank}: " if rank is not None else ""
        details = "" if isinstance(error, AttnsegError) else "\n" + "".join(traceback.format_exception(error))
        tqdm.write(f"attnseg: {where}case {failure.case_id} failed: {message}{details}", file=sys.stderr)
        if self.predictor.device.type == "cuda":
            torch.cuda.empty_cache()  # after an out-of-memory error, the next case starts clean
        self._advance()

    def _advance(self) -> None:
        done = self.finished.add(1)
        if not self.bar.disable:
            self.bar.update(done - self.bar.n)
            self.bar.set_postfix_str(f"{60 * done / max(self.bar.format_dict['elapsed'], 1e-9):.1f} cases/min")
