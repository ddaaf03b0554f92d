"""The training configuration: one validated schema, defaults in one place.

A YAML file (every key optional) plus command-line overrides (``--set optimizer.lr=3e-4``) give the
effective configuration; a key neither sets takes the chosen network's own training recipe when its
registration has one (``NetworkSpec.recipe``, e.g. the multi-scale network's Adam), else the default
below. ``Config.source(key)`` says which of the three a value came from (``--print-config`` shows it).
Unknown keys and wrong types are errors that name the key; the network's
own arguments are checked against its constructor's signature, so a typo in ``network.gate_heads``
fails before anything is built.
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Annotated, Any, Literal, get_type_hints

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from attnseg.data.augment import AugmentConfig
from attnseg.data.plan import Scheme
from attnseg.errors import ConfigError
from attnseg.networks.registry import get_spec
from attnseg.training.budget import parse_duration


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class NetworkConfig(BaseModel):
    """``name`` picks a network from ``attnseg models``; every other key goes to its constructor.

    ``in_channels`` and ``out_channels`` are filled in from the dataset.
    """

    model_config = ConfigDict(extra="allow")
    name: str = "attention_unet"
    spatial_dims: Literal[2, 3] = 2

    def kwargs(self) -> dict[str, Any]:
        return {"spatial_dims": self.spatial_dims, **(self.model_extra or {})}


def _augmentation_section() -> type[BaseModel]:
    """``data.augmentation``: ``enabled`` plus every field of :class:`attnseg.data.augment.AugmentConfig`,
    with its defaults (one place for them)."""
    hints = get_type_hints(AugmentConfig)
    fields: dict[str, Any] = {"enabled": (bool, True)}
    fields.update({f.name: (hints[f.name], f.default) for f in dataclasses.fields(AugmentConfig)})
    return create_model("AugmentationConfig", __base__=_Section, **fields)


AugmentationConfig = _augmentation_section()


def augment_config(section: BaseModel) -> AugmentConfig | None:
    """The data layer's AugmentConfig for a validated section; None when augmentation is off."""
    values = section.model_dump()
    return AugmentConfig(**{k: v for k, v in values.items() if k != "enabled"}) if values.pop("enabled") else None


class DataConfig(_Section):
    dataset: Path | None = Field(None, description="nnU-Net, Decathlon or paired-folder dataset")
    fold: Annotated[int, Field(ge=0)] | Literal["all"] = Field(
        0, description="fold of splits.json to validate on; 'all': train on every case, no validation"
    )
    target_spacing: list[float | None] | None = Field(
        None, description="resample to this spacing (null keeps an axis); None: the dataset's median"
    )
    batch_size: int = Field(8, ge=1)
    patch_size: list[int] | None = Field(None, description="3D patch or 2D slice size; None: from the plan")
    slice_axis: int | None = Field(None, ge=0, le=2, description="2D models: axis to slice along; None: from the plan")
    normalization: Scheme | list[Scheme] | None = Field(
        None,
        description="intensity normalisation: one scheme for every channel or one per channel (ct, robust_zscore, "
        "zscore, rescale, none); None: from the channel names in dataset.json (CT -> ct, else robust_zscore)",
    )
    foreground_fraction: float = Field(0.33, ge=0, le=1, description="share of samples centred on foreground")
    num_workers: int = Field(0, ge=0)
    cache: Path | None = Field(
        None,
        description="preprocess once into this folder and memory-map it (datasets larger than RAM); "
        "None: preprocess in memory at every start",
    )
    augmentation: AugmentationConfig = AugmentationConfig()


class OptimizerConfig(_Section):
    name: Literal["adam", "adamw", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    momentum: float = Field(0.99, ge=0, lt=1, description="SGD only (Nesterov)")
    nesterov: bool = True
    betas: tuple[float, float] = (0.9, 0.999)


class SchedulerConfig(_Section):
    name: Literal["poly", "step", "cosine", "constant"] = "poly"
    power: float = Field(0.9, gt=0, description="poly: lr * (1 - epoch / epochs) ** power")
    step_size: int = Field(50, ge=1, description="step: epochs between decays")
    gamma: float = Field(0.5, gt=0, le=1, description="step: decay factor")
    min_lr: float = Field(0.0, ge=0, description="cosine: final learning rate")


class LossConfig(_Section):
    name: Literal["ce", "dice", "dice_ce", "focal", "dice_focal", "tversky"] = "dice_ce"
    include_background: bool = True
    smooth: float = Field(1e-5, ge=0)
    class_weights: list[float] | None = None
    deep_supervision_weights: list[float] | None = Field(
        None, description="weights of the main and auxiliary outputs; None: 1, 1/2, 1/4, ..."
    )
    guided_weight: float = Field(0.25, ge=0, description="multi-scale guided network: latent consistency")
    reconstruction_weight: float = Field(0.1, ge=0, description="multi-scale guided network: reconstructions")
    fine_weight: float = Field(
        1.0, ge=0, description="multi-scale guided network: its high-resolution head, against 1 for each other head"
    )


class TrainingConfig(_Section):
    epochs: int = Field(50, ge=1)
    iterations_per_epoch: int = Field(50, ge=1)
    val_every: int = Field(1, ge=1, description="validate every N epochs")
    patience: int | None = Field(None, ge=1, description="early stopping: validations without improvement")
    grad_clip: float | None = Field(12.0, gt=0, description="max gradient norm; None: no clipping")
    amp: Literal["auto", "bf16", "fp16", "off"] = Field(
        "auto",
        description="mixed precision; auto: bf16 (fp16 without bf16) on CUDA; fp32 or bf16 on a CPU, measured",
    )
    layout: Literal["auto", "channels_last", "contiguous"] = Field(
        "auto", description="memory layout of the network and batches; auto: the faster one, measured"
    )
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"
    threads: int | None = Field(
        None,
        ge=1,
        description="torch threads on the CPU; None: torch's default (one per core, or OMP_NUM_THREADS), or one "
        "when the machine is already busy (1-minute load >= cores); runtime.json records the count and why",
    )
    checkpoint_every: int = Field(1, ge=1, description="write the resume checkpoint every N epochs")
    time_budget: float | str | None = Field(
        None,
        description="wall-clock budget for the whole run, e.g. 300, 90s, 5m, 1.5h: epochs are planned from "
        "measured step times and the run stops on time (training.epochs is then ignored); None: no budget",
    )
    dist_timeout: float = Field(
        600.0, gt=0, description="torchrun: seconds a rank waits for the others in a collective before failing"
    )

    @field_validator("time_budget")
    @classmethod
    def _duration(cls, value: float | str | None) -> float | None:
        return None if value is None else parse_duration(value)

    @field_validator("amp", mode="before")
    @classmethod
    def _off_is_not_false(cls, value: Any) -> Any:
        """YAML reads a bare ``off`` as false: ``amp: off`` means fp32."""
        return "off" if value is False else value


class PredictionConfig(_Section):
    dicom_output_format: Literal["dicom-seg", "dicom", ".nrrd", ".nii.gz", ".nii", ".mha"] | None = Field(
        None,
        description="what `attnseg predict` writes for a DICOM series input when --format is not given: "
        "dicom-seg (a DICOM Segmentation in the scan's study), dicom (a series of label slices) or a file "
        "ending; None: .nrrd",
    )


class FinetuneConfig(_Section):
    """Start from another model's weights (``attnseg train --init-from``): attnseg.training.init_from."""

    init_from: Path | None = Field(
        None, description="model directory or weights file (.safetensors, .pt) whose matching tensors start the run"
    )
    freeze: Literal["encoder"] | None = Field(None, description="keep these parameters fixed (attnseg.training.freeze)")
    freeze_epochs: int | None = Field(None, ge=1, description="freeze for the first N epochs; None: the whole run")
    keep_source_plan: bool = Field(
        False, description="take spacing and normalisation from init_from's plan.json instead of the new dataset"
    )

    @model_validator(mode="after")
    def _freeze_needs_a_source(self) -> FinetuneConfig:
        # a frozen encoder that was never loaded stays random for the run: nothing a user wants
        if self.freeze is not None and self.init_from is None:
            raise ValueError(
                f"freeze={self.freeze!r} keeps the source model's {self.freeze} fixed, "
                "so it needs init_from (--init-from)"
            )
        return self


class Config(_Section):
    network: NetworkConfig = NetworkConfig()
    data: DataConfig = DataConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    loss: LossConfig = LossConfig()
    training: TrainingConfig = TrainingConfig()
    prediction: PredictionConfig = PredictionConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    output: Path | None = None
    _sources: dict[str, str] = PrivateAttr(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def source(self, key: str) -> str:
        """Where the value of dotted ``key`` came from: ``user`` (the YAML file or an override),
        ``network recipe (NAME: ...)`` or ``default``."""
        return self._sources.get(key, DEFAULT)

    def sources(self) -> dict[str, str]:
        """The source of every key of the effective configuration."""
        return {key: self.source(key) for key in leaf_keys(self.to_dict())}

    def to_annotated_yaml(self) -> str:
        """The YAML of ``to_yaml`` (it loads back the same) with each key's source as a comment."""
        return "".join(line + "\n" for line in _annotated_lines(self.to_dict(), self.source))


USER = "user"
DEFAULT = "default"


def leaf_keys(node: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys of the values of a nested mapping (lists and empty mappings are values)."""
    keys = []
    for key, value in node.items():
        if isinstance(value, dict) and value:
            keys += leaf_keys(value, f"{prefix}{key}.")
        else:
            keys.append(f"{prefix}{key}")
    return keys


def _annotated_lines(node: dict[str, Any], source: Any, prefix: str = "", indent: int = 0) -> list[str]:
    lines = []
    for key, value in node.items():
        pad = "  " * indent
        if isinstance(value, dict) and value:
            lines.append(f"{pad}{key}:")
            lines += _annotated_lines(value, source, f"{prefix}{key}.", indent + 1)
            continue
        text = yaml.safe_dump(value, default_flow_style=True, width=1_000_000).removesuffix("\n...\n").strip()
        lines.append(f"{f'{pad}{key}: {text}':<44}  # {source(prefix + key)}")
    return lines


def network_recipe(raw: dict[str, Any]) -> tuple[str, dict[str, Any], str]:
    """The network named by a raw configuration (or the default network), its recipe and the recipe's
    source; no recipe for a name that is not registered (validation reports it)."""
    network = raw.get("network")
    name = network.get("name") if isinstance(network, dict) and "name" in network else NetworkConfig().name
    try:
        spec = get_spec(str(name))
    except ConfigError:
        return str(name), {}, ""
    return spec.name, spec.recipe, spec.recipe_source


# Defaults that depend on the network's dimensionality. nnU-Net's 3d_fullres trains with batch 2: a batch
# of 8 patches of 96-128 voxels a side makes a step so costly that a CPU time budget buys a handful of
# steps (measured: Colin27, --spatial-dims 3 --time-budget 5m on 2 cores, 6 steps at batch 8 and a mask
# of the whole head, Dice 0.435 on ITK's head; 24 steps at batch 2, Dice 0.921).
DIMENSION_DEFAULTS: dict[int, dict[str, Any]] = {3: {"data.batch_size": 2}}
DIMENSION_DEFAULTS_SOURCE = "3D default (nnU-Net's 3d_fullres batch)"


def dimension_defaults(raw: dict[str, Any]) -> dict[str, Any]:
    """The defaults of the dimensionality a raw configuration asks for (``network.spatial_dims``)."""
    network, default = raw.get("network"), NetworkConfig().spatial_dims
    dims = network.get("spatial_dims", default) if isinstance(network, dict) else default
    return DIMENSION_DEFAULTS.get(dims, {}) if isinstance(dims, int) else {}  # a wrong type: validation says so


def apply_recipe(raw: dict[str, Any]) -> dict[str, str]:
    """Fill ``raw`` with the chosen network's recipe, then the defaults of its dimensionality, where the
    user has not set the key; returns the source of every key: ``user`` for the keys of ``raw``,
    ``network recipe (...)`` or ``3D default (...)`` for the filled ones."""
    sources = dict.fromkeys(leaf_keys(raw), USER)
    name, recipe, origin = network_recipe(raw)
    _fill(raw, recipe, sources, f"network recipe ({name}{': ' + origin if origin else ''})")
    _fill(raw, dimension_defaults(raw), sources, DIMENSION_DEFAULTS_SOURCE)
    return sources


def _fill(raw: dict[str, Any], values: dict[str, Any], sources: dict[str, str], source: str) -> None:
    """Set each dotted key of ``values`` in ``raw`` unless a key or section of it is already in ``sources``."""
    for key, value in values.items():
        *sections, leaf = key.split(".")
        if key in sources or any(".".join(sections[: i + 1]) in sources for i in range(len(sections))):
            continue  # the user set it (or set its whole section to a value)
        node = raw
        for section in sections:
            node = node.setdefault(section, {})
            if not isinstance(node, dict):
                break
        else:
            node[leaf] = value
            sources[key] = source


def _format_validation_error(error: ValidationError, source: str, prefix: str = "") -> str:
    problems = []
    for item in error.errors():
        key = prefix + (".".join(str(part) for part in item["loc"]) or "(top level)")
        message = "unknown key" if item["type"] == "extra_forbidden" else item["msg"]
        problems.append(f"{key}: {message}")
    return f"{source}: " + "; ".join(problems)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a", "b", "c"], value parsed as YAML: numbers, booleans, lists...)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.subkey=value")
    key, value = text.split("=", 1)
    if not key.strip():
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        return key.strip().split("."), yaml.safe_load(value)
    except yaml.YAMLError as error:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({error.problem})") from error


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        keys, value = parse_override(text)
        node = raw
        for key in keys[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {key} is not a section")
            node = child
        node[keys[-1]] = value
    return raw


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError as error:
        raise ConfigError(f"{path}: config file not found") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({error})") from error
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the config must be a mapping of sections, got {type(raw).__name__}")
    return raw


def load_config(path: Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or start from the defaults), apply overrides, validate everything."""
    raw = read_yaml(path) if path is not None else {}
    raw = apply_overrides(raw, overrides or [])
    sources = apply_recipe(raw)
    source = str(path) if path is not None else "config"
    try:
        config = Config.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_format_validation_error(error, source)) from error
    validate_network_config(config.network, source)
    config._sources = sources
    return config


def validate_network_config(network: NetworkConfig, source: str = "config") -> None:
    """Check ``network.*`` keys and types against the chosen network's constructor."""
    try:
        spec = get_spec(network.name)
    except ConfigError as error:
        raise ConfigError(f"{source}: network.name: {error}") from error
    if network.spatial_dims not in spec.spatial_dims:
        raise ConfigError(
            f"{source}: network.spatial_dims: {network.name} supports {spec.spatial_dims}, got {network.spatial_dims}"
        )
    filled_from_data = {"in_channels", "out_channels"}
    hints = get_type_hints(spec.cls.__init__)
    fields: dict[str, Any] = {
        name: (hints.get(name, Any), parameter.default)
        for name, parameter in inspect.signature(spec.cls).parameters.items()
        if name not in filled_from_data and name != "spatial_dims"
    }
    schema = create_model(
        f"{network.name}_arguments",
        __config__=ConfigDict(extra="forbid", arbitrary_types_allowed=True),
        **fields,
    )
    extra = dict(network.model_extra or {})
    for key in filled_from_data & set(extra):
        raise ConfigError(f"{source}: network.{key} is set from the dataset; remove it")
    try:
        schema.model_validate(extra)
    except ValidationError as error:
        raise ConfigError(_format_validation_error(error, source, prefix="network.")) from error
