"""``attnseg export --format monai-bundle``: a model directory as a MONAI Bundle that runs without attnseg.

    BUNDLE/
      configs/metadata.json    the bundle specification's metadata: versions, task, licence, and
                               network_data_format (inputs: modality, channels, value range; outputs:
                               the class names), valid against schemas/monai_bundle_metadata.json
      configs/inference.json   load, Orientationd to RAS, attnseg's crop/normalisation/resampling,
                               the network slice by slice (2D) or by sliding window (3D), back to the
                               input's grid, largest components, SaveImaged
      models/model.ts          the network (TorchScript, any spatial size: attnseg.export)
      models/model.pt          its state dict (the specification requires it; tensors only)
      scripts/                 attnseg_transforms.py (a copy of attnseg.bundle_scripts: MONAI, torch,
                               numpy only) for what MONAI has no transform for (robust_zscore)
      docs/README.md           the model card (MODEL_CARD.md) and how to run the bundle

``python -m monai.bundle run --config_file configs/inference.json --dataset_dir IN --output_dir OUT``
(run from BUNDLE, or with ``--bundle_root BUNDLE``) writes one mask per ``IN/*.nii.gz``.
The folder is written beside ``output`` and renamed into place when complete.
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attnseg import __version__, bundle_scripts
from attnseg.data.plan import Plan
from attnseg.errors import ConfigError, OutputExistsError
from attnseg.export import export_torchscript
from attnseg.fileio import staged_folder
from attnseg.model_dir import ModelDir

SCHEMA = Path(__file__).parent / "schemas" / "monai_bundle_metadata.json"
SCRIPT_MODULE = "attnseg_transforms"
# What the bundle's environment needs besides torch and MONAI: nibabel (LoadImaged, SaveImaged), fire
# (MONAI's bundle command line), scikit-image (MONAI's KeepLargestConnectedComponent).
BUNDLE_PACKAGES = ("nibabel", "fire", "scikit-image")
MODALITY = {"ct": "CT"}  # any other scheme: "MR" when the channel is named so, else the channel's name


def installed_version(package: str) -> str:
    """The version installed here, or "any" (attnseg itself does not need ``fire`` or ``scikit-image``)."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "any"


def metadata(directory: ModelDir) -> dict[str, Any]:
    """configs/metadata.json of the bundle specification for ``directory``."""
    plan = directory.load_plan()
    labels = {str(index): name for index, name in enumerate(plan.class_names)}
    channels = {str(index): name for index, name in enumerate(plan.channel_names)}
    modality = MODALITY.get(plan.normalization[0].scheme, plan.channel_names[0])
    spatial = ["*"] * plan.image_dims
    return {
        "schema": "attnseg/schemas/monai_bundle_metadata.json (from the MONAI Bundle specification)",
        "version": "1.0.0",
        "changelog": {"1.0.0": f"exported by attnseg {__version__} from {directory.path.name}"},
        "monai_version": importlib.metadata.version("monai"),
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__,
        "optional_packages_version": {name: installed_version(name) for name in BUNDLE_PACKAGES},
        "name": directory.path.name,
        "task": f"segmentation of {', '.join(plan.class_names[1:])}",
        "description": f"attnseg {directory.network_spec()['name']} ({plan.spatial_dims}D); see docs/README.md",
        "authors": "attnseg",
        "copyright": "the model's trainer",
        "license": "see docs/README.md (the licence of the training data applies)",
        "intended_use": "research only: not for diagnosis; inputs like the training data (docs/README.md)",
        "weights_sha256": directory.weights_sha256(),
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "hounsfield" if modality == "CT" else "magnitude",
                    "modality": modality,
                    "num_channels": plan.num_channels,
                    "spatial_shape": spatial,
                    "dtype": "float32",
                    "value_range": [],
                    "is_patch_data": False,
                    "channel_def": channels,
                }
            },
            "outputs": {
                "pred": {
                    "type": "image",
                    "format": "segmentation",
                    "num_channels": 1,
                    "spatial_shape": spatial,
                    "dtype": "uint8" if max(plan.class_values) <= 255 else "int32",
                    "value_range": [min(plan.class_values), max(plan.class_values)],
                    "is_patch_data": False,
                    "channel_def": labels,
                    "label_values": dict(zip(plan.class_names, plan.class_values, strict=True)),
                }
            },
        },
    }


def inference_config(directory: ModelDir) -> dict[str, Any]:
    """configs/inference.json: MONAI transforms, attnseg's where MONAI has none (scripts/)."""
    plan = directory.load_plan()
    lcc = directory.postprocessing().get("largest_component", {})
    largest = [plan.class_names.index(name) for name in lcc]
    script = f"$scripts.{SCRIPT_MODULE}"
    return {
        "imports": [
            "$import glob",
            "$import os",
            "$import numpy as np",
            "$import scripts",
            f"$import scripts.{SCRIPT_MODULE}",
        ],
        "bundle_root": ".",
        "dataset_dir": "input",
        "output_dir": "output",
        "device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
        "datalist": "$[{'image': path} for path in sorted(glob.glob(os.path.join(@dataset_dir, '*.nii*')))]",
        "network": "$torch.jit.load(os.path.join(@bundle_root, 'models', 'model.ts'), map_location=@device).eval()",
        "preprocessing": preprocessing(plan),
        "dataset": {"_target_": "Dataset", "data": "@datalist", "transform": "@preprocessing"},
        "inferer": {
            "_target_": f"{script}.SliceInferer",
            "spatial_dims": plan.spatial_dims,
            "slice_axis": plan.slice_axis if plan.slice_axis is not None else 0,
            "patch_size": list(plan.patch_size),
        },
        "postprocessing": postprocessing(plan, largest),
        "initialize": ["$os.makedirs(@output_dir, exist_ok=True)"],
        "run": [
            "$[@postprocessing(dict(item, pred=@inferer(item['image'][None].to(@device), @network)[0])) "
            "for item in @dataset]"
        ],
        "finalize": [],
    }


def preprocessing(plan: Plan) -> dict[str, Any]:
    """Load, channel first, reorient as the plan; then attnseg's crop, normalisation and resampling."""
    script = f"$scripts.{SCRIPT_MODULE}"
    return {
        "_target_": "Compose",
        "transforms": [
            {"_target_": "LoadImaged", "keys": "image", "reader": "NibabelReader", "image_only": True},
            {"_target_": "EnsureChannelFirstd", "keys": "image"},
            # a plan without an orientation (older models) works on the voxel order as stored
            {"_target_": "Orientationd", "keys": "image", "axcodes": plan.orientation or "RAS"}
            if plan.orientation
            else {"_target_": "Identityd", "keys": "image"},
            {
                "_target_": f"{script}.Preprocessd",
                "keys": "image",
                "normalization": [{k: v for k, v in vars(n).items() if v is not None} for n in plan.normalization],
                "target_spacing": list(plan.target_spacing),
            },
        ],
    }


def postprocessing(plan: Plan, largest: list[int]) -> dict[str, Any]:
    """Back to the input's grid (attnseg's restore, MONAI's largest component and orientation), then save."""
    script = f"$scripts.{SCRIPT_MODULE}"
    return {
        "_target_": "Compose",
        "transforms": [
            {
                "_target_": f"{script}.Restored",
                "keys": "pred",
                "class_values": list(plan.class_values),
                "largest_component": largest,
            },
            {
                "_target_": "SaveImaged",
                "keys": "pred",
                "output_dir": "@output_dir",
                "output_postfix": "",
                "separate_folder": False,
                "resample": False,
                "output_dtype": "$np.uint8" if max(plan.class_values) <= 255 else "$np.int32",
                "print_log": False,
            },
        ],
    }


def readme(directory: ModelDir) -> str:
    """docs/README.md: how to run the bundle, then the model card."""
    card = directory.file("MODEL_CARD.md")
    body = card.read_text(encoding="utf-8") if card.exists() else "(this model directory has no MODEL_CARD.md)\n"
    usage = (
        "# MONAI Bundle exported by attnseg\n\n"
        "```\npython -m monai.bundle run --config_file configs/inference.json --bundle_root . "
        "--dataset_dir IN --output_dir OUT\n```\n\n"
        "Needs torch, MONAI and nibabel; not attnseg. Every `IN/*.nii*` becomes a mask of label values in "
        "`OUT`, on the input's own grid. The preprocessing is attnseg's: orientation to RAS, crop to the "
        "non-zero box, the plan's normalisation, linear resampling to the plan's spacing; the class "
        "probabilities go back linearly before the argmax.\n\n"
    )
    return usage + body


def export_bundle(model_dir: str | Path, output: str | Path, overwrite: bool = False) -> Path:
    """Write the MONAI Bundle of ``model_dir`` to the folder ``output``; returns it."""
    directory, output = ModelDir(model_dir), Path(output)
    if output.exists() and not overwrite:
        raise OutputExistsError(f"{output} exists; pass --overwrite to replace it")
    plan = directory.load_plan()
    if plan.image_dims != 3 or plan.num_channels != 1:
        raise ConfigError(
            "a MONAI Bundle is exported for one-channel models of 3D images only (it reads one NIfTI file per case)"
        )
    with staged_folder(output) as staging:
        _write(directory, staging)
    return output


def _write(directory: ModelDir, root: Path) -> None:
    plan = directory.load_plan()
    for folder in ("configs", "models", "docs", "scripts"):
        (root / folder).mkdir()
    network = directory.build_network(weights=True)
    example = torch.randn(1, plan.num_channels, *plan.patch_size)
    export_torchscript(network, example, root / "models" / "model.ts")
    torch.save({k: v.detach().cpu() for k, v in network.state_dict().items()}, root / "models" / "model.pt")
    (root / "configs" / "metadata.json").write_text(json.dumps(metadata(directory), indent=2) + "\n")
    (root / "configs" / "inference.json").write_text(json.dumps(inference_config(directory), indent=2) + "\n")
    (root / "docs" / "README.md").write_text(readme(directory), encoding="utf-8")
    (root / "scripts" / "__init__.py").write_text("")
    shutil.copyfile(bundle_scripts.__file__, root / "scripts" / f"{SCRIPT_MODULE}.py")
