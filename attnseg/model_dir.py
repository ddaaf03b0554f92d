"""The model directory: where training leaves everything that prediction needs later.

    MODEL_DIR/
      config.yaml           the effective training configuration
      network.json          network name and every constructor argument (channels and classes included)
      plan.json             the preprocessing the model expects (attnseg.data.plan.Plan)
      labels.json           class name -> label value
      weights.safetensors   the selected weights (best validation, else last), with provenance metadata
      metadata.json         package version, git revision, torch version, date
      postprocessing.json   what the predictor does after the network, and why (largest component per class)
      runtime.json          how training ran: memory layout, mixed precision, why (measured step times)
      calibration.json      the temperature fitted on the validation cases, ECE before and after
      fingerprint.json      what the model saw: spacings, sizes, intensities, label volumes (quality control)
      checkpoint/last.pt    the resume state (model, optimizer, scheduler, scaler, epoch, RNG)
      log.csv, progress.png, tensorboard/
      .train.lock           held while a training writes here: a second one is refused, not interleaved

Training writes it and inference reads it; neither imports the other. Weights are never unpickled:
safetensors for the weights, ``torch.load(weights_only=True)`` for the resume state.
"""

from __future__ import annotations

import datetime
import hashlib
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from attnseg import __version__
from attnseg.data.plan import Plan
from attnseg.errors import AttnsegError, ConfigError
from attnseg.fileio import atomic_path, read_json, write_json, write_text
from attnseg.networks.registry import build_network


class ModelDirError(AttnsegError):
    """A model directory is missing, incomplete or corrupt."""


def git_revision() -> str | None:
    """The commit of the attnseg source tree, when it is a git checkout."""
    source = Path(__file__).resolve().parent
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


def provenance() -> dict[str, str | None]:
    return {
        "attnseg_version": __version__,
        "git_revision": git_revision(),
        "torch_version": str(torch.__version__),
        "python_version": platform.python_version(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


class ModelDir:
    CONFIG = "config.yaml"
    NETWORK = "network.json"
    PLAN = "plan.json"
    LABELS = "labels.json"
    WEIGHTS = "weights.safetensors"
    METADATA = "metadata.json"
    POSTPROCESSING = "postprocessing.json"
    RUNTIME = "runtime.json"
    FINGERPRINT = "fingerprint.json"
    CALIBRATION = "calibration.json"
    CHECKPOINT = "checkpoint/last.pt"
    LOG = "log.csv"
    PROGRESS = "progress.png"
    TENSORBOARD = "tensorboard"
    TRAIN_LOCK = ".train.lock"  # held by the training that writes this directory (fileio.exclusive_use)

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"ModelDir({str(self.path)!r})"

    def file(self, name: str) -> Path:
        return self.path / name

    # writing (training) ----------------------------------------------------------------------

    def write_description(
        self, config_yaml: str, network: dict[str, Any], plan: dict[str, Any], labels: dict[str, int]
    ) -> None:
        """Everything but the weights; rewritten on every (re)start of a run."""
        self.path.mkdir(parents=True, exist_ok=True)
        write_text(self.file(self.CONFIG), config_yaml, overwrite=True)
        write_json(self.file(self.NETWORK), network, overwrite=True)
        write_json(self.file(self.PLAN), plan, overwrite=True)
        write_json(self.file(self.LABELS), labels, overwrite=True)
        write_json(self.file(self.METADATA), provenance(), overwrite=True)

    def write_runtime(self, runtime: dict[str, Any]) -> None:
        """The memory layout and precision the training runs with (``attnseg.runtime.Runtime``)."""
        self.path.mkdir(parents=True, exist_ok=True)
        write_json(self.file(self.RUNTIME), runtime, overwrite=True)

    def save_weights(self, model: nn.Module, extra_metadata: dict[str, Any] | None = None) -> None:
        metadata = {k: str(v) for k, v in {**provenance(), **(extra_metadata or {})}.items() if v is not None}
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        with atomic_path(self.file(self.WEIGHTS), overwrite=True) as tmp:
            save_file(state, str(tmp), metadata=metadata)

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        with atomic_path(self.file(self.CHECKPOINT), overwrite=True) as tmp:
            torch.save(state, tmp)

    # reading (inference, resume) -------------------------------------------------------------

    def _read_json(self, name: str) -> Any:
        path = self.file(name)
        if not path.exists():
            raise ModelDirError(f"{path}: missing; is {self.path} a model directory written by `attnseg train`?")
        return read_json(path, error=ModelDirError)

    def network_spec(self) -> dict[str, Any]:
        spec = self._read_json(self.NETWORK)
        if not isinstance(spec.get("name"), str) or not isinstance(spec.get("kwargs"), dict):
            raise ModelDirError(f"{self.file(self.NETWORK)}: expected {{'name': NETWORK, 'kwargs': {{...}}}}")
        return spec

    def runtime(self) -> dict[str, Any] | None:
        """The training's recorded runtime; None for model directories written before it was recorded."""
        return self._read_json(self.RUNTIME) if self.file(self.RUNTIME).exists() else None

    def training_fingerprint(self) -> dict[str, Any] | None:
        """What the model saw in training (:mod:`attnseg.data.training_fingerprint`); None for model
        directories written before it was kept (quality control then checks headers and masks only)."""
        return self._read_json(self.FINGERPRINT) if self.file(self.FINGERPRINT).exists() else None

    def temperature(self) -> float:
        """The temperature fitted at the end of training (``calibration.json``); 1 (none) for models
        trained without validation cases or before calibration existed."""
        if not self.file(self.CALIBRATION).exists():
            return 1.0
        value = self._read_json(self.CALIBRATION).get("temperature")
        if not isinstance(value, (int, float)) or not value > 0:
            raise ModelDirError(f"{self.file(self.CALIBRATION)}: the temperature must be a positive number")
        return float(value)

    def plan(self) -> dict[str, Any]:
        return self._read_json(self.PLAN)

    def load_plan(self) -> Plan:
        """The preprocessing plan, validated; a damaged plan.json is an error that names it."""
        try:
            return Plan.from_dict(self.plan())
        except ConfigError as error:
            raise ModelDirError(f"{self.file(self.PLAN)}: {error}") from error

    def labels(self) -> dict[str, int]:
        labels = self._read_json(self.LABELS)
        integers = all(isinstance(v, int) and not isinstance(v, bool) for v in labels.values())
        if not integers or 0 not in labels.values():
            raise ModelDirError(
                f"{self.file(self.LABELS)}: expected class names mapped to integer label values, background 0"
            )
        return labels

    def build_network(self, weights: bool = True, device: str | torch.device = "cpu") -> nn.Module:
        """The network of ``network.json``; with ``weights``, loaded, and built with the preset those
        weights were trained with (the name's current preset, or a former one for an older model)."""
        spec = self.network_spec()
        state = self.read_weights() if weights else None
        try:
            model = build_network(spec["name"], fit_weights=state, **spec["kwargs"])
        except (AttnsegError, TypeError, ValueError) as error:
            raise ModelDirError(
                f"{self.file(self.NETWORK)}: cannot build the network it describes ({error})"
            ) from error
        if state is not None:
            self._load_state(model, state)
        return model.to(device).eval()

    def write_postprocessing(self, decision: dict[str, Any]) -> None:
        write_json(self.file(self.POSTPROCESSING), decision, overwrite=True)

    def postprocessing(self) -> dict[str, Any]:
        """The post-processing training chose (``{}`` for model directories written before it existed)."""
        path = self.file(self.POSTPROCESSING)
        return read_json(path, error=ModelDirError) if path.exists() else {}

    def read_weights(self) -> dict[str, torch.Tensor]:
        path = self.file(self.WEIGHTS)
        if not path.exists():
            raise ModelDirError(f"{path}: missing; the run has not finished an epoch yet")
        try:
            return load_file(str(path))
        except Exception as error:  # safetensors raises several types for a damaged file
            raise ModelDirError(f"{path}: cannot read the weights ({error})") from error

    def load_weights(self, model: nn.Module) -> None:
        self._load_state(model, self.read_weights())

    def _load_state(self, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
        try:
            model.load_state_dict(state)
        except RuntimeError as error:
            first = str(error).strip().splitlines()[0]
            raise ModelDirError(
                f"{self.file(self.WEIGHTS)}: weights do not fit the network in {self.NETWORK} ({first})"
            ) from error

    def weights_sha256(self) -> str:
        """The SHA-256 of the weights file: identifies the exact model that made an output (DICOM SEG
        algorithm identification), whatever the directory is called or where it was copied."""
        path = self.file(self.WEIGHTS)
        if not path.exists():
            raise ModelDirError(f"{path}: missing; the run has not finished an epoch yet")
        digest = hashlib.sha256()
        with open(path, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()

    def default_dicom_format(self) -> str | None:
        """``prediction.dicom_output_format`` of the model's config.yaml: the output format ``attnseg
        predict`` uses for DICOM series inputs when none is asked for (None: not set, or an older model)."""
        import yaml

        path = self.file(self.CONFIG)
        if not path.exists():
            return None
        try:
            config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as error:
            raise ModelDirError(f"{path}: not valid YAML ({error})") from error
        section = config.get("prediction") if isinstance(config, dict) else None
        value = section.get("dicom_output_format") if isinstance(section, dict) else None
        return str(value) if value else None

    def load_checkpoint(self, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
        path = self.file(self.CHECKPOINT)
        if not path.exists():
            return None
        try:
            return torch.load(path, map_location=map_location, weights_only=True)
        except Exception as error:
            raise ModelDirError(f"{path}: cannot read the resume checkpoint ({error})") from error
