"""The MONAI Bundle export (``attnseg export --format monai-bundle``).

The quick tests check the folder, its metadata and that its scripts import nothing of attnseg. The
``bundle`` test (``make test-bundle``, run by .ci/run: a fresh virtual environment costs more than the
default suite allows) installs torch, MONAI and nibabel WITHOUT attnseg into a cached environment, runs
the bundle with ``python -m monai.bundle run`` and compares its masks with ``attnseg predict``'s.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from attnseg import bundle_scripts
from attnseg.bundle import SCHEMA
from attnseg.cli import main
from tests.processes import run_with_stack_dump

# What the bundle's environment holds: MONAI and what its bundle runner (fire) and the largest-component
# transform (scikit-image) need; jsonschema to validate metadata.json. torch pinned: a CPU build.
BUNDLE_REQUIREMENTS = ["torch==2.13.0", "monai", "nibabel", "fire", "scikit-image", "jsonschema"]
AGREEMENT = 0.999


@pytest.fixture(scope="module")
def bundle(trained_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("bundle") / "tiny_bundle"
    assert main(["export", "-m", str(trained_model), "--format", "monai-bundle", "-o", str(output)]) == 0
    return output


def test_bundle_layout_and_metadata(bundle: Path, trained_model: Path) -> None:
    for name in ("configs/metadata.json", "configs/inference.json", "models/model.ts", "docs/README.md"):
        assert (bundle / name).is_file(), name
    meta = json.loads((bundle / "configs/metadata.json").read_text())
    schema = json.loads(SCHEMA.read_text())
    assert set(schema["required"]) <= set(meta)
    outputs = meta["network_data_format"]["outputs"]["pred"]
    labels = json.loads((trained_model / "labels.json").read_text())
    assert list(outputs["channel_def"].values()) == list(labels)
    readme = (bundle / "docs/README.md").read_text()
    assert (trained_model / "MODEL_CARD.md").read_text() in readme
    # the output exists: a second export needs --overwrite
    assert main(["export", "-m", str(trained_model), "--format", "monai-bundle", "-o", str(bundle)]) != 0


def test_bundle_scripts_import_no_attnseg(bundle: Path) -> None:
    source = (bundle / "scripts" / "attnseg_transforms.py").read_text()
    assert source == Path(bundle_scripts.__file__).read_text()
    modules = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module.split(".")[0])
    assert "attnseg" not in modules and modules <= {
        "__future__",
        "collections",
        "typing",
        "numpy",
        "torch",
        "monai",
        "nibabel",
    }


def bundle_venv() -> Path:
    """A virtual environment with MONAI and without attnseg, built once per requirement list and cached
    in the temporary folder (about a minute the first time: torch installs from the local index). A
    folder left without its ``ready`` mark by an interrupted build is built again."""
    key = hashlib.sha256(" ".join([sys.version, *BUNDLE_REQUIREMENTS]).encode()).hexdigest()[:12]
    venv = Path(tempfile.gettempdir()) / f"attnseg-bundle-venv-{key}"
    if (venv / "ready").exists():
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", *BUNDLE_REQUIREMENTS]
    subprocess.run(pip, check=True, timeout=900, env=clean_env())
    (venv / "ready").write_text("\n".join(BUNDLE_REQUIREMENTS))
    return venv


def clean_env() -> dict[str, str]:
    """This process's environment without anything that would make attnseg importable."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}


def agreement(a: Path, b: Path) -> float:
    first, second = nib.load(a), nib.load(b)
    assert np.allclose(first.affine, second.affine, atol=1e-4), (a.name, first.affine, second.affine)
    x, y = np.asarray(first.dataobj), np.asarray(second.dataobj)
    assert x.shape == y.shape, (a.name, x.shape, y.shape)
    return float((x == y).mean())


@pytest.mark.bundle
@pytest.mark.timeout(1800)
def test_bundle_runs_without_attnseg_and_agrees_with_predict(
    bundle: Path, trained_model: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    venv = bundle_venv()
    python = str(venv / "bin" / "python")
    env = clean_env()
    probe = subprocess.run([python, "-c", "import attnseg"], cwd=tmp_path, env=env, capture_output=True, timeout=60)
    assert probe.returncode != 0, "attnseg must not be importable in the bundle's environment"
    validate = (
        "import json, sys, jsonschema; jsonschema.validate(json.load(open(sys.argv[1])), json.load(open(sys.argv[2])))"
    )
    meta = bundle / "configs/metadata.json"
    assert subprocess.run([python, "-c", validate, str(meta), str(SCHEMA)], env=env, timeout=60).returncode == 0
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({k: v for k, v in json.loads(meta.read_text()).items() if k != "task"}))
    assert (
        subprocess.run(
            [python, "-c", validate, str(broken), str(SCHEMA)], env=env, timeout=60, capture_output=True
        ).returncode
        != 0
    )

    images, ours, theirs = tiny_dataset / "imagesTr", tmp_path / "predict", tmp_path / "bundle_out"
    assert main(["predict", "-m", str(trained_model), "-i", str(images), "-o", str(ours), "--no-progress"]) == 0
    command = [python, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json", "--bundle_root", "."]
    command += ["--dataset_dir", str(images), "--output_dir", str(theirs)]
    finished = run_with_stack_dump(command, timeout=600, env=env, cwd=bundle)
    assert finished.returncode == 0, finished.stderr[-4000:]
    for image in sorted(images.glob("*_0000.nii.gz")):
        case = image.name.removesuffix("_0000.nii.gz")
        assert agreement(ours / f"{case}.nii.gz", theirs / image.name) >= AGREEMENT
