"""``attnseg predict``: masks for new scans, on each scan's own grid.

For every input image and every model directory: apply the model's preprocessing plan (resample,
normalise, crop), run the network (2D: batches of slices; 3D: sliding window with Gaussian
blending), optionally with mirroring test-time augmentation, and put the class probabilities back on
the original grid. Models of an ensemble (folds, or different networks with the same labels) are
averaged there. The mask is written with the input's geometry, so it overlays the scan in any viewer.
Masks for DICOM series inputs are ``.nrrd`` files, or, with the output format ``dicom``, DICOM series
in the scan's own study and frame of reference.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from attnseg.data import (
    Image,
    Plan,
    PreprocessedCase,
    preprocess_case,
    restore_channel,
    restore_probabilities,
    write_image,
)
from attnseg.data.arrays import argmax_channels, argmax_classes
from attnseg.data.dicom import write_dicom_series
from attnseg.data.dicom_seg import SEG_ENDING, Algorithm, WrittenSeg, write_seg
from attnseg.device import resolve_device
from attnseg.distributed import local_rank
from attnseg.errors import ConfigError, DataError
from attnseg.inference.batch import predict_cases
from attnseg.inference.postprocess import LARGEST_COMPONENT, keep_largest_components
from attnseg.inference.qc import CaseQC, Votes, assess_case
from attnseg.inference.steps import PreparedImage
from attnseg.inference.volume import predict_preprocessed, predict_variants
from attnseg.metrics.calibration import apply_temperature
from attnseg.model_dir import ModelDir
from attnseg.runtime import Runtime, inference_runtime


@dataclass
class LoadedModel:
    model_dir: ModelDir
    network: torch.nn.Module
    plan: Plan
    runtime: Runtime
    temperature: float = 1.0  # calibration.json's; applied to the model's probabilities


class Predictor:
    """Segment images with one model directory or an ensemble of them.

    Args:
        model_dirs: one or more directories written by ``attnseg train``; all must share the labels.
        device: ``auto`` (this process's GPU when CUDA is available: ``LOCAL_RANK`` under torchrun),
            ``cpu``, ``cuda``, ``cuda:1``...
        mirror: mirroring test-time augmentation (4 flips in 2D, 8 in 3D): slower, usually a little better.
        batch_size: slices (2D) or windows (3D) per forward pass; None: 4 on a CPU (larger batches
            only add memory traffic there), 16 on a GPU.
        overlap: sliding-window overlap (3D).
        largest_component: keep only the largest connected component of a foreground class: None (default)
            for the classes each model directory's ``postprocessing.json`` names (all models must agree),
            True for every foreground class, False for none.
        amp: mixed precision: ``auto`` runs each model as its training chose on the same kind of device
            (``runtime.json``: layout and precision), else channels-last with fp16 on CUDA and fp32
            elsewhere; ``off``, ``bf16`` or ``fp16`` set the precision.
        quality_control: check every case against the first model's training fingerprint and write
            ``qc.json`` / ``qc.csv`` with the masks (:mod:`attnseg.inference.qc`).

    One image goes through three steps, which a run over many files (:mod:`attnseg.inference.batch`)
    spreads over threads: :meth:`prepare` (checks and preprocessing: a loader thread), :meth:`forward`
    (the networks: the thread that owns the GPU), :meth:`finish` (back to the image's grid, ensemble
    average, argmax: a writer thread). :meth:`predict_image` runs all three.
    """

    def __init__(
        self,
        model_dirs: Sequence[str | Path],
        device: str | torch.device = "auto",
        mirror: bool = False,
        batch_size: int | None = None,
        overlap: float = 0.5,
        largest_component: bool | None = None,
        amp: str = "auto",
        quality_control: bool = True,
    ) -> None:
        if not model_dirs:
            raise ConfigError("give at least one model directory")
        self.device = resolve_device(device, local_rank())
        self.mirror = mirror
        self.batch_size = batch_size or (16 if self.device.type == "cuda" else 4)
        self.overlap = overlap
        self.amp = amp
        self.models = [self._load(ModelDir(path)) for path in model_dirs]
        self.labels = self.models[0].model_dir.labels()
        for loaded in self.models[1:]:
            if loaded.model_dir.labels() != self.labels:
                raise ConfigError(
                    f"{loaded.model_dir.path}: labels {loaded.model_dir.labels()} differ from "
                    f"{self.models[0].model_dir.path}: {self.labels}; an ensemble needs the same labels"
                )
        self.num_channels = self.models[0].plan.num_channels
        # What each channel file must hold (CASE_000k: channel k), checked against the scans' dataset.json.
        self.channel_names = list(self.models[0].plan.channel_names)
        self.dicom_output_format = self._dicom_output_format()
        self._algorithm: Algorithm | None = None
        self.written_segs: list[WrittenSeg] = []  # every SEG this predictor wrote, with its UIDs
        self.largest_component_classes = self._largest_component_classes(largest_component)
        self.quality_control = quality_control
        self.fingerprint = self.models[0].model_dir.training_fingerprint() if quality_control else None

    def _largest_component_classes(self, requested: bool | None) -> list[int]:
        """Class indices whose largest connected component alone is kept (see attnseg.inference.postprocess)."""
        plan = self.models[0].plan
        if requested is not None:
            return list(range(1, plan.num_classes)) if requested else []
        chosen = [set(loaded.model_dir.postprocessing().get(LARGEST_COMPONENT, {})) for loaded in self.models]
        agreed = set.intersection(*chosen)
        return [index for index, name in enumerate(plan.class_names) if index > 0 and name in agreed]

    def _dicom_output_format(self) -> str | None:
        """The output format the model's config names for DICOM series inputs (all models must agree)."""
        chosen = {loaded.model_dir.default_dicom_format() for loaded in self.models}
        if len(chosen) > 1:
            raise ConfigError(
                f"the models name different output formats for DICOM inputs ({', '.join(map(str, chosen))}); "
                "choose one with --format"
            )
        return chosen.pop()

    def algorithm(self) -> Algorithm:
        """attnseg, its version and the models' weights hashes: who made a DICOM SEG (hashed once)."""
        from attnseg import __version__

        if self._algorithm is None:
            self._algorithm = Algorithm(
                name="attnseg",
                version=__version__,
                model="+".join(loaded.model_dir.path.resolve().name for loaded in self.models),
                weights_sha256=tuple(loaded.model_dir.weights_sha256() for loaded in self.models),
            )
        return self._algorithm

    def _load(self, model_dir: ModelDir) -> LoadedModel:
        plan = model_dir.load_plan()
        network = model_dir.build_network(weights=True, device=self.device)
        runtime = inference_runtime(model_dir.runtime(), self.device, self.amp)
        return LoadedModel(model_dir, runtime.prepare_model(network), plan, runtime, model_dir.temperature())

    # one image ---------------------------------------------------------------------------------

    def predict_image(self, image: Image) -> tuple[np.ndarray, np.ndarray]:
        """(mask (1, *S) of label values, probabilities (K, *S)) on ``image``'s grid."""
        prepared = self.prepare(image)
        return self.finish(prepared, self.forward(prepared))

    def prepare(self, image: Image) -> PreparedImage:
        """Check ``image`` against the models and preprocess it once per distinct plan."""
        if image.channels != self.num_channels:
            raise DataError(
                f"{image.name}: {image.channels} channel(s), but the model expects {self.num_channels} "
                f"({', '.join(self.models[0].plan.channel_names)})"
            )
        prepared = PreparedImage(image)
        by_plan: dict[str, int] = {}
        for index, loaded in enumerate(self.models):
            plan = loaded.plan
            if image.spatial_dims != plan.image_dims:
                raise DataError(
                    f"{image.name}: a {image.spatial_dims}-D image, but the model was trained on {plan.image_dims}-D"
                )
            key = json.dumps(plan.to_dict(), sort_keys=True)
            if key not in by_plan:
                by_plan[key] = len(prepared.groups)
                prepared.groups.append((preprocess_case(image, plan), []))
            prepared.groups[by_plan[key]][1].append(index)
        return prepared

    @property
    def measures_agreement(self) -> bool:
        """Quality control on, and several predictions per case (mirrored copies, ensemble members) whose
        disagreement it uses (:class:`~attnseg.inference.qc.Agreement`)."""
        return self.quality_control and (self.mirror or len(self.models) > 1)

    @torch.inference_mode()
    def forward(self, prepared: PreparedImage) -> list[torch.Tensor]:
        """The mean class probabilities of each group's models, on that group's preprocessed grid (CPU);
        with :attr:`measures_agreement`, ``prepared.agreement`` too."""
        means = []
        for case, members in prepared.groups:
            total = None
            votes = Votes(len(self.labels)) if self.measures_agreement else None
            for index in members:
                loaded = self.models[index]
                probabilities = apply_temperature(self._probabilities(loaded, case, votes), loaded.temperature)
                total = probabilities if total is None else total.add_(probabilities)
            means.append(total / len(members))
            if votes is not None:
                found = votes.agreement(float(np.prod(case.properties.spacing)))
                prepared.agreement = found if prepared.agreement is None else prepared.agreement + found
        return means

    def _probabilities(self, loaded: LoadedModel, case: PreprocessedCase, votes: Votes | None) -> torch.Tensor:
        """One model's class probabilities (averaged over the mirrored copies with TTA) on the case's grid.
        With ``votes``, the copies are predicted one at a time and each copy's mask is counted (the mean is
        the same, to rounding); one extra volume of probabilities is held, never the copies."""
        options = {
            "batch_size": self.batch_size,
            "overlap": self.overlap,
            "device": self.device,
            "autocast_dtype": loaded.runtime.amp_dtype,
        }
        if votes is None:
            return predict_preprocessed(loaded.network, case.image, loaded.plan, mirror=self.mirror, **options)
        total, copies = None, 0
        for probabilities in predict_variants(loaded.network, case.image, loaded.plan, mirror=self.mirror, **options):
            votes.add(probabilities.argmax(0).numpy())
            total = probabilities if total is None else total.add_(probabilities)
            copies += 1
        return total / copies

    def finish(
        self, prepared: PreparedImage, means: Sequence[torch.Tensor], probabilities: bool = True
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(mask, probabilities) on the image's grid from :meth:`forward`'s output: every model's
        probabilities count once in the ensemble average, taken on the image's grid.

        ``probabilities=False`` (the caller writes none): unless quality control needs them, they are not
        kept (None) and the mask comes from one class at a time (:meth:`_classes_by_channel`): the same
        mask, without the K-channel volume (1.3 GB for 4 classes on a 512 x 512 x 300 CT).
        """
        if not probabilities and not self.quality_control:
            scores, classes = None, self._classes_by_channel(prepared, means)
        else:
            scores = self._restored(prepared, means, None)
            classes = argmax_classes(scores)
        if self.largest_component_classes:
            classes = keep_largest_components(classes, self.largest_component_classes)
        values = np.asarray(self.models[0].plan.class_values)
        dtype = np.uint8 if values.min() >= 0 and values.max() <= 255 else np.int32
        return values.astype(dtype)[classes][None], scores

    def _restored(self, prepared: PreparedImage, means: Sequence[torch.Tensor], channel: int | None) -> np.ndarray:
        """The ensemble's mean probabilities on the image's grid: ``(K, *S)``, or one class's ``(*S)``.

        In place, the same float32 operations as ``a * n``, ``a + b``, ``a / n``, skipped where they multiply
        or divide by 1: on a CT each new array is a volume of K channels (1.3 GB for 4 classes, 512 x 512 x
        300). Elementwise, so one channel's values are those of the whole volume's.
        """
        probabilities = None
        for (case, members), mean in zip(prepared.groups, means, strict=True):
            if channel is None:
                restored = restore_probabilities(mean, case.properties)
            else:
                restored = restore_channel(mean, case.properties, channel)
            if len(members) > 1:
                restored *= len(members)
            if probabilities is None:
                probabilities = restored
            else:
                probabilities += restored
        if len(self.models) > 1:
            probabilities /= len(self.models)
        return probabilities

    def _classes_by_channel(self, prepared: PreparedImage, means: Sequence[torch.Tensor]) -> np.ndarray:
        """``argmax_classes`` of the restored probabilities, restored one class at a time (a running maximum)."""
        count = len(self.labels)
        return argmax_channels((self._restored(prepared, means, k) for k in range(count)), count)

    def assess(
        self, case_id: str, prepared: PreparedImage, mask: np.ndarray, probabilities: np.ndarray | None
    ) -> CaseQC | None:
        """The quality control of one finished case (None when switched off); see :mod:`attnseg.inference.qc`."""
        if not self.quality_control or probabilities is None:
            return None
        plan = self.models[0].plan
        return assess_case(
            case_id,
            prepared.image,
            mask[0],
            probabilities,
            plan.class_values,
            plan.class_names,
            self.fingerprint,
            prepared.agreement,
        )

    # files ---------------------------------------------------------------------------------------

    def predict_files(
        self,
        inputs: str | Path | Sequence[str | Path],
        output: str | Path,
        overwrite: bool = False,
        save_probabilities: bool = False,
        output_ending: str | None = None,
        progress: bool = True,
        skip_existing: bool = False,
        num_workers: int | None = None,
    ) -> list[Path]:
        """Segment every case found in ``inputs`` and write ``OUTPUT/<case><ending>``; returns the masks written.

        ``output_ending`` is a file ending (``.nii.gz``, ``.nrrd``...; default: the input's, ``.nrrd`` for
        DICOM series) or ``"dicom"``: for DICOM series inputs only, each mask becomes a DICOM series folder
        ``OUTPUT/<case>`` in the scan's study (see :func:`~attnseg.data.dicom.write_dicom_series`; its
        probabilities, if asked for, go to ``.nrrd``). Every output path is checked before the first case
        runs, so a refused overwrite costs nothing. ``skip_existing`` keeps complete outputs and predicts
        what is missing. See :func:`attnseg.inference.batch.predict_cases` (which this calls) for the
        rest; a case that fails does not stop the others, and :class:`~attnseg.errors.DataError` lists
        every failed case at the end.
        """
        report = predict_cases(
            self,
            inputs,
            output,
            overwrite=overwrite,
            skip_existing=skip_existing,
            save_probabilities=save_probabilities,
            output_ending=output_ending,
            num_workers=num_workers,
            progress=progress,
        )
        report.raise_for_failures()
        return report.written

    def write_mask(self, path: Path, mask: np.ndarray, image: Image, overwrite: bool, dicom: bool) -> None:
        """A file with the image's geometry, a DICOM SEG (``*.seg.dcm``) or a DICOM series in the image's
        study (``dicom``)."""
        if path.name.lower().endswith(SEG_ENDING):
            description = f"attnseg ({self.models[0].model_dir.path.resolve().name})"
            written = write_seg(
                path, mask, image, self.labels, self.algorithm(), overwrite=overwrite, series_description=description
            )
            self.written_segs.append(written)
            return
        if not dicom:
            write_image(path, mask, image.geometry, overwrite=overwrite)
            return
        description = f"attnseg mask ({self.models[0].model_dir.path.resolve().name})"
        write_dicom_series(
            path, mask, image.geometry, overwrite=overwrite, reference=image, series_description=description
        )
