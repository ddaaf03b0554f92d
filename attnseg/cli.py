"""The ``attnseg`` command: one small function per verb; each parses nothing itself and calls the
library. Errors a user can cause print one line and exit with status 2 (``--debug`` shows the
traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from attnseg import __version__
from attnseg.errors import AttnsegError, ConfigError

EPILOG = """\
the workflow, one verb per step:
  attnseg dataset prepare mni152-tissue data/mni152     # or bring your own nnU-Net / Decathlon folder
  attnseg dataset check data/mni152                     # every file, label and geometry checked
  attnseg train --dataset data/mni152 --output runs/mni --epochs 24
  attnseg predict -m runs/mni -i data/mni152/imagesTr -o predictions
  attnseg evaluate predictions data/mni152              # Dice, HD95, ... -> summary.json
  attnseg export -m runs/mni --format onnx              # + parity check and a JSON sidecar
  attnseg visualize -m runs/mni -i scan.nii.gz -o attention   # where the model looks
  attnseg report runs/mni                               # one HTML page with everything
or all of it at once on the built-in brain dataset: attnseg demo

  attnseg models --spatial-dims 3 --in-channels 1 --classes 4 --feature-scale 4

Run `attnseg VERB --help` for the options of each verb.
"""


def _add_network_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--spatial-dims", type=int, choices=(2, 3), default=2, help="2D or 3D (default: 2)")
    parser.add_argument("--in-channels", type=int, default=1, help="input channels / modalities (default: 1)")
    parser.add_argument("--classes", type=int, default=2, help="output classes incl. background (default: 2)")
    parser.add_argument(
        "--feature-scale",
        type=float,
        default=4.0,
        help="U-Net family: divides the widths 64..1024 (default: 4, the paper's)",
    )


def _network_config(args: argparse.Namespace, spec) -> dict:
    """The common options that this network takes (the MS network has no feature scale, ...)."""
    config = {
        "spatial_dims": args.spatial_dims,
        "in_channels": args.in_channels,
        "out_channels": args.classes,
        "feature_scale": args.feature_scale,
    }
    return {k: v for k, v in config.items() if spec.accepts(k)}


def cmd_models(args: argparse.Namespace) -> int:
    import torch

    from attnseg.networks.registry import NETWORKS
    from attnseg.networks.utils import count_parameters

    rows = []
    for spec in NETWORKS.values():
        row = {"name": spec.name, "description": spec.description, "parameters": None}
        if args.spatial_dims in spec.spatial_dims:
            with torch.device("meta"):  # counts parameters without allocating them
                model = spec.cls(**{**spec.preset, **_network_config(args, spec)})
            row["parameters"] = count_parameters(model)
        rows.append(row)
    if args.json:
        config = {k: getattr(args, k) for k in ("spatial_dims", "in_channels", "classes", "feature_scale")}
        print(json.dumps({"config": config, "networks": rows}, indent=2))
        return 0
    width = max(len(r["name"]) for r in rows)
    print(
        f"networks for spatial_dims={args.spatial_dims}, in_channels={args.in_channels}, "
        f"classes={args.classes}, feature_scale={args.feature_scale:g}\n"
    )
    print(f"{'name':<{width}}  {'parameters':>12}  description")
    for r in rows:
        count = f"{r['parameters']:,}" if r["parameters"] is not None else f"{args.spatial_dims}D n/a"
        print(f"{r['name']:<{width}}  {count:>12}  {r['description']}")
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    from attnseg.networks.registry import build_network, get_spec
    from attnseg.profiling import profile_forward, profile_training
    from attnseg.training.config import load_config

    spec = get_spec(args.network)
    if len(args.size) != args.spatial_dims:
        raise ConfigError(f"--size needs {args.spatial_dims} numbers for a {args.spatial_dims}D network")
    if (args.config or args.set) and not args.train:
        raise ConfigError("--config and --set describe a training run: add --train")
    config = load_config(args.config, [f"network.name={args.network}", *args.set]) if args.train else None
    extra = dict(config.network.model_extra or {}) if config else {}  # e.g. --set network.aux_outputs=true
    model = build_network(args.network, **{**_network_config(args, spec), **extra})
    shape = (args.batch, args.in_channels, *args.size)
    if config is not None:
        p = profile_training(config, model, shape, device=args.device, repeats=args.repeats)
    else:
        p = profile_forward(model, shape, device=args.device, repeats=args.repeats)
    if args.json:
        report = {"network": args.network, "input_shape": shape, "device": args.device, **p.as_dict()}
        print(json.dumps(report, indent=2))
        return 0
    runtime = p.runtime
    print(
        f"{args.network} on {tuple(shape)}, {args.device}, {runtime['layout']} layout, "
        f"{'fp32' if runtime['amp'] == 'off' else runtime['amp'] + ' autocast'} ({runtime['reason']})"
    )
    print(f"  {p.parameters:,} parameters, {p.gflops:,.1f} GFLOP per forward pass")
    print(f"  forward pass   {p.forward_ms:9.1f} ms  (median of {args.repeats}), peak +{_mib_text(p.peak_mib)}")
    if p.train_step_ms is not None:
        peak = _mib_text(p.train_peak_mib)
        print(f"  training step  {p.train_step_ms:9.1f} ms  (median of {args.repeats}), peak +{peak}")
    if runtime.get("step_ms"):
        print("  measured steps: " + ", ".join(f"{name} {ms:.0f} ms" for name, ms in runtime["step_ms"].items()))
    return 0


def _mib_text(mib: float | None) -> str:
    return "n/a" if mib is None else f"{mib:,.0f} MiB"


def cmd_demo(args: argparse.Namespace) -> int:
    from attnseg.demo import run_demo

    return run_demo(args.output, epochs=args.epochs, overwrite=args.overwrite)


def cmd_dataset_check(args: argparse.Namespace) -> int:
    from attnseg.data.check import check_dataset

    report = check_dataset(args.path, max_cases=args.max_cases)
    if args.json:
        summary = report.summary()
        summary["problems"] = [{"level": p.level, "path": p.path, "message": p.message} for p in report.problems]
        print(json.dumps(summary, indent=2))
    else:
        print(report.format())
    return 0 if report.ok else 1


def cmd_dataset_prepare(args: argparse.Namespace) -> int:
    from attnseg.data.builtin import prepare_builtin

    out = prepare_builtin(args.name, args.out, overwrite=args.overwrite)
    print(f"wrote {args.name} to {out}; next: attnseg dataset check {out}")
    return 0


def _add_dataset_verbs(verbs: argparse._SubParsersAction) -> None:
    from attnseg.data.builtin import BUILTIN

    dataset = verbs.add_parser(
        "dataset",
        help="check a dataset folder, or prepare a built-in real dataset",
        description="Work with segmentation datasets on disk (nnU-Net v2 raw, Medical Segmentation Decathlon, "
        "or paired images/ + labels/ folders).",
        epilog="examples:\n  attnseg dataset prepare mni152-tissue data/mni152\n  attnseg dataset check data/mni152",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    dataset.set_defaults(func=lambda _args: dataset.print_help() or 0)
    actions = dataset.add_subparsers(dest="action", metavar="ACTION")

    check = actions.add_parser(
        "check",
        help="validate a dataset and summarise it",
        description=(
            "Read every case once and report: every image has a label; label shape and geometry (spacing, "
            "origin, direction) match the image; label values are among the labels declared in dataset.json; "
            "intensities are finite; every case has the declared channels, one 3-D file per channel in nnU-Net "
            "format (_0000, _0001, ...); files are readable (truncated or corrupt gzip is caught). Prints a "
            "summary (cases, spacings, sizes, intensity statistics, class frequencies), then one line per "
            "problem naming the file. Exit status: 0 no errors (warnings allowed), 1 errors found, 2 not a "
            "dataset at all."
        ),
        epilog=(
            "layouts recognised:\n"
            "  nnU-Net v2 raw  dataset.json, imagesTr/CASE_0000.nii.gz, labelsTr/CASE.nii.gz, imagesTs/\n"
            "  Decathlon       dataset.json with 'training': [{'image': ..., 'label': ...}], 4-D multi-modal NIfTI\n"
            "  paired          images/CASE.nrrd + labels/CASE.nrrd (or CASE_seg, _label, _mask, _gt)\n"
            "example: attnseg dataset check data/mni152 --json"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("path", help="the dataset folder (or its dataset.json)")
    check.add_argument("--max-cases", type=int, default=None, help="check only the first N training cases")
    check.add_argument("--json", action="store_true", help="machine-readable summary and problems")
    check.set_defaults(func=cmd_dataset_check)

    names = "\n".join(f"  {name:<14} {spec.title}\n  {'':<14} {spec.description}" for name, spec in BUILTIN.items())
    prepare = actions.add_parser(
        "prepare",
        help="write a built-in real dataset (shipped inside an installed package) in nnU-Net format",
        description=(
            "Write a built-in dataset, made from a real volume shipped inside a registry package (nothing is "
            "downloaded), as an nnU-Net v2 raw dataset with dataset.json, splits.json (training slabs kept "
            "apart from validation slabs by a gap of unused slices) and a README giving source and licence. "
            "These show the pipeline on real anatomy; they are not clinical benchmarks. The packages come "
            "with `pip install 'attnseg[data]'` (make demo and make test install them)."
        ),
        epilog=f"datasets:\n{names}\nexample: attnseg dataset prepare ctchest data/ctchest",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    prepare.add_argument("name", choices=sorted(BUILTIN), metavar="NAME", help="one of: " + ", ".join(BUILTIN))
    prepare.add_argument("out", metavar="OUT", help="output folder (must not exist, unless --overwrite)")
    prepare.add_argument("--overwrite", action="store_true", help="replace OUT if it holds a dataset")
    prepare.set_defaults(func=cmd_dataset_prepare)


def cmd_train(args: argparse.Namespace) -> int:
    from attnseg.training.config import load_config
    from attnseg.training.run import train

    overrides = list(args.set)
    for flag, key in TRAIN_SHORTCUTS.items():
        value = getattr(args, flag)
        if value is not None and value is not False:
            overrides.append(f"{key}={value}")
    config = load_config(args.config, overrides)
    if args.print_config:
        print(config.to_yaml(), end="")
        return 0
    state = train(config, resume=args.resume, overwrite=args.overwrite, show_progress=not args.no_progress)
    if state.best_epoch:
        weights = f"weights of the best validation Dice, {state.best_metric:.4f} at epoch {state.best_epoch}"
    else:
        weights = "no validation: weights of the last epoch"
    print(f"finished {state.epoch} epoch(s); {weights}; model directory: {config.output}")
    return 0


# command-line flag -> configuration key it overrides
TRAIN_SHORTCUTS = {
    "dataset": "data.dataset",
    "output": "output",
    "fold": "data.fold",
    "network": "network.name",
    "spatial_dims": "network.spatial_dims",
    "epochs": "training.epochs",
    "seed": "training.seed",
    "deterministic": "training.deterministic",
    "device": "training.device",
    "time_budget": "training.time_budget",
}

TRAIN_EPILOG = """examples:
  attnseg train --dataset data/mni152 --output runs/mni --epochs 20
  attnseg train configs/attention_unet_2d.yaml --dataset data/Dataset001_Liver --output runs/liver_f0 --fold 0
  attnseg train configs/attention_unet_2d.yaml --set optimizer.lr=3e-4 --set data.batch_size=4 --print-config
  attnseg train configs/attention_unet_2d.yaml --output runs/liver_f0 --resume     # continue after a crash
  torchrun --nproc_per_node=4 -m attnseg train configs/attention_unet_3d_paper.yaml --output runs/ct   # 4 GPUs

The configuration is YAML with the sections network, data, optimizer, scheduler, loss, training (see
--print-config for every key and its default). Unknown keys and wrong types are errors that name the key.
The output folder becomes a model directory for `attnseg predict`: config.yaml, plan.json, labels.json,
weights.safetensors (best validation Dice), checkpoint/last.pt (resume), runtime.json (memory layout and
mixed precision, and why), log.csv, progress.png, tensorboard/.

Speed: training.layout (channels_last, contiguous) and training.amp (bf16, fp16, off) default to auto: a
few training steps of every candidate are timed on the first batch and the fastest is kept (bf16 or fp16
on CUDA; fp32 or, where the CPU has bf16 kernels, bf16 on a CPU). --deterministic takes channels-last
and the device's default precision without timing. `attnseg profile NETWORK --train` shows the choice.
"""


def _fold(text: str) -> int | str:
    if text == "all":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fold number or 'all', got {text!r}") from None


def _add_train_verb(verbs: argparse._SubParsersAction) -> None:
    train = verbs.add_parser(
        "train",
        help="train a network on a dataset folder",
        description=(
            "Train a network from the registry on an nnU-Net / Decathlon / paired-folder dataset: plan the "
            "preprocessing from the dataset's fingerprint, take one fold of its splits.json (5 case-level folds "
            "are made when it has none), sample slices (2D networks) or patches (3D networks) with foreground "
            "oversampling and augmentation, and validate on whole cases (slices reassembled into volumes) with "
            "Dice per class. Memory layout and mixed precision chosen by measurement (see below); DDP under "
            "torchrun."
        ),
        epilog=TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument("config", nargs="?", type=Path, help="YAML configuration (default: all defaults)")
    train.add_argument("--dataset", help="dataset folder (data.dataset)")
    train.add_argument("--output", help="model directory to write (output)")
    train.add_argument(
        "--fold",
        type=_fold,
        help="fold of splits.json to validate on (data.fold, default 0); 'all': train on every case with no "
        "validation and keep the last epoch's weights (one labelled case, or a final model)",
    )
    train.add_argument("--network", help="network name from `attnseg models` (network.name)")
    train.add_argument("--spatial-dims", type=int, choices=(2, 3), help="2D on slices or 3D on patches")
    train.add_argument("--epochs", type=int, help="training.epochs")
    train.add_argument(
        "--time-budget",
        metavar="DURATION",
        help="finish the whole run within this wall time, e.g. 300, 90s, 5m, 1.5h (training.time_budget): epochs "
        "are planned from step times measured on this machine and the run stops on time, keeping the best model; "
        "a 2D run whose spacing is left to the plan trains at a coarser in-plane spacing (at most 2x) when fewer "
        "than 1000 steps would fit at the data's own",
    )
    train.add_argument("--seed", type=int, help="training.seed")
    train.add_argument("--deterministic", action="store_true", default=None, help="deterministic kernels")
    train.add_argument("--device", help="auto, cpu, cuda, cuda:1 (training.device)")
    train.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override any key, e.g. optimizer.lr=3e-4"
    )
    train.add_argument("--resume", action="store_true", help="continue the run in --output from its checkpoint")
    train.add_argument("--overwrite", action="store_true", help="start again in an --output that holds a run")
    train.add_argument("--print-config", action="store_true", help="print the effective configuration and exit")
    train.add_argument("--no-progress", action="store_true", help="no progress bar (logs, CI)")
    train.set_defaults(func=cmd_train)


def cmd_predict(args: argparse.Namespace) -> int:
    from attnseg.inference.batch import predict_cases
    from attnseg.inference.predictor import Predictor

    if args.dist_timeout <= 0:
        raise ConfigError(f"--dist-timeout must be positive, got {args.dist_timeout:g}")
    if (args.dicomweb is None) == (args.input is None):
        raise ConfigError("give either -i INPUT or --dicomweb URL --study UID")
    if args.dicomweb is not None and not args.study:
        raise ConfigError("--dicomweb needs --study STUDY_UID")
    predictor = Predictor(
        args.model,
        device=args.device,
        mirror=args.tta,
        batch_size=args.batch_size,
        overlap=args.overlap,
        largest_component=args.largest_component,
        amp=args.amp,
    )
    if args.dicomweb is not None:
        from attnseg.data.dicomweb import load_credentials
        from attnseg.inference.pacs import predict_from_pacs

        result = predict_from_pacs(
            predictor,
            args.dicomweb,
            args.study,
            args.output,
            series_uid=args.series,
            store=args.store,
            credentials=load_credentials(args.dicomweb_credentials),
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
        print(result.summary(args.dicomweb), flush=True)
        return 0
    report = predict_cases(
        predictor,
        args.input,
        args.output,
        overwrite=args.overwrite,
        skip_existing=args.skip_existing,
        save_probabilities=args.probabilities,
        output_ending=args.format,
        num_workers=args.num_workers,
        progress=not args.no_progress,
        dist_timeout_s=args.dist_timeout,
    )
    if not report.is_main:
        return 0  # rank 0 reports for the whole run, and its exit status is the run's
    print(report.summary(args.output), flush=True)
    return 1 if report.failures else 0


PREDICT_EPILOG = """\
INPUT is an image file, a folder of image files (nnU-Net names CASE_0000, CASE_0001 are grouped into one
multi-channel case), or a DICOM series folder (its mask is written as .nrrd, or with --format dicom as a
DICOM series folder OUTPUT/<series> in the scan's study: Secondary Capture slices of label values, not
DICOM-SEG).

many scans, many processes: under torchrun the cases are shared out over every process (largest first,
each process claiming the next case when it is free), one GPU per process; each mask is written once,
exactly as a single process would write it. A case that fails is reported and the run goes on; the run
ends with a summary of every failed case and exit status 1. Outputs are written atomically (the mask
last), so a killed run is resumed by the same command with --skip-existing.

examples:
  attnseg predict -m runs/mni -i data/mni152/imagesTr -o predictions
  attnseg predict -m runs/fold0 -m runs/fold1 -m runs/fold2 -i scan.nii.gz -o out --tta --probabilities
  attnseg predict -m runs/ct -i dicom/series1 -o out --largest-component
  attnseg predict -m runs/ct -i dicom/series1 -o out --format dicom     # out/series1/IM00001.dcm ...
  attnseg predict -m runs/ct -i dicom/export -o out --output-format dicom-seg    # out/<series>.seg.dcm
  attnseg predict -m runs/ct --dicomweb http://pacs:8042/dicom-web --study 1.2.3 -o out --store
  torchrun --nproc_per_node=4 -m attnseg predict -m runs/ct -i scans/ -o out        # 4 GPUs
  torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 \\
      -m attnseg predict -m runs/ct -i /shared/scans -o /shared/out --skip-existing  # 2 machines
  attnseg predict -m runs/ct -i scans/ -o out --skip-existing     # resume: only what is missing

exit status: 0 every case written or complete; 1 some cases failed (listed); 2 nothing ran (bad option,
model or input, or outputs in the way).
See docs/distributed-prediction.md.
"""


def _add_predict_verb(verbs: argparse._SubParsersAction) -> None:
    predict = verbs.add_parser(
        "predict",
        help="segment new scans with a trained model (or an ensemble), on one or many processes",
        description=(
            "Segment every image in INPUT with the model directory written by `attnseg train`: the model's "
            "preprocessing (resampling, normalisation, cropping) is applied and undone, so each mask has exactly "
            "its scan's shape, spacing, origin and direction. 2D models run slice by slice in batches, 3D models "
            "by sliding window with Gaussian blending. Several -m give an ensemble (probabilities averaged on the "
            "scan's grid). Masks are written atomically; existing files are kept unless --overwrite. Background "
            "threads read and preprocess the next scans while the network runs; the run prints cases per minute."
        ),
        epilog=PREDICT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    predict.add_argument("-m", "--model", action="append", required=True, help="model directory (repeat to ensemble)")
    predict.add_argument("-i", "--input", nargs="+", help="image file(s), folder(s) or DICOM folder(s) or trees")
    predict.add_argument("-o", "--output", required=True, help="folder for the masks")
    predict.add_argument("--tta", action="store_true", help="mirroring test-time augmentation (4x slower in 2D)")
    predict.add_argument("--probabilities", action="store_true", help="also write CASE_probabilities (K channels)")
    postprocessing = predict.add_mutually_exclusive_group()
    postprocessing.add_argument(
        "--largest-component",
        dest="largest_component",
        action="store_const",
        const=True,
        help="keep only the largest connected component of every class (default: of the classes the model's "
        "postprocessing.json names, chosen at training time from the labels' topology and validation)",
    )
    postprocessing.add_argument(
        "--no-postprocessing",
        dest="largest_component",
        action="store_const",
        const=False,
        help="the network's argmax as it is, without the model's post-processing",
    )
    pacs = predict.add_argument_group("PACS round trip (DICOMweb; see docs/dicom.md)")
    pacs.add_argument("--dicomweb", metavar="URL", help="DICOMweb root of the archive, instead of -i")
    pacs.add_argument("--study", metavar="UID", help="StudyInstanceUID to retrieve and segment")
    pacs.add_argument("--series", metavar="UID", help="only this series of the study (default: every image series)")
    pacs.add_argument("--store", action="store_true", help="store the SEGs back on the archive (STOW-RS)")
    pacs.add_argument(
        "--dicomweb-credentials",
        metavar="FILE",
        help="file holding user:password or 'Bearer TOKEN' (default: $ATTNSEG_DICOMWEB_CREDENTIALS); never echoed",
    )
    predict.add_argument(
        "--format",
        "--output-format",
        help="output ending, e.g. .nii.gz or .nrrd (default: the input's; for DICOM the model's "
        "prediction.dicom_output_format, else .nrrd), 'dicom': a DICOM series per DICOM input, in its study, or "
        "'dicom-seg': one DICOM Segmentation per DICOM series (OUTPUT/<series>.seg.dcm)",
    )
    predict.add_argument(
        "--batch-size", type=int, default=None, help="slices or windows per forward pass (default: 4 on CPU, 16 on GPU)"
    )
    predict.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap, 3D (default 0.5)")
    predict.add_argument(
        "--device", default="auto", help="auto, cpu, cuda, cuda:1 (default: auto: under torchrun, GPU LOCAL_RANK)"
    )
    predict.add_argument(
        "--amp",
        choices=("auto", "off", "bf16", "fp16"),
        default="auto",
        help="mixed precision (default auto: as the training chose on this kind of device, recorded in "
        "MODEL/runtime.json; else fp16 on CUDA, fp32 on a CPU); off: full fp32",
    )
    predict.add_argument("--overwrite", action="store_true", help="replace existing masks")
    predict.add_argument(
        "--skip-existing",
        action="store_true",
        help="keep outputs that exist and are complete, predict only the missing ones (resume a killed run); "
        "with --overwrite, also replace outputs that exist but are not complete",
    )
    predict.add_argument(
        "--num-workers",
        type=int,
        default=None,
        metavar="N",
        help="background threads per process reading and preprocessing the next scans (default: 1 on CPU, "
        "2 on GPU; 0: none)",
    )
    predict.add_argument(
        "--dist-timeout",
        type=float,
        default=1800.0,
        metavar="S",
        help="under torchrun: seconds a process waits for the others, at the start and for the last cases "
        "at the end (default 1800); a longer wait fails naming the rank",
    )
    predict.add_argument("--no-progress", action="store_true", help="no progress bar")
    predict.set_defaults(func=cmd_predict)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from attnseg.evaluate import (
        OVERLAY_FOLDER,
        evaluate_folders,
        find_images,
        find_labels,
        write_overlays,
        write_reports,
    )
    from attnseg.metrics import markdown_table

    # a dataset folder's dataset.json, or the one above a labelsTr/ folder (None: names from the values)
    labels = find_labels(Path(args.reference), Path(args.labels) if args.labels else None)
    report, problems = evaluate_folders(
        args.predictions,
        args.reference,
        labels,
        args.nsd_tolerance,
        progress=not args.no_progress,
        num_workers=args.num_workers,
    )
    if report is None:
        print(f"attnseg: error: {len(problems)} problem(s); nothing was evaluated:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    folder = Path(args.output or args.predictions)
    paths = write_reports(report, folder, overwrite=args.overwrite)
    print(markdown_table(report))
    print(f"\nwrote {', '.join(str(p) for p in paths.values())}")
    if args.overlays:
        images = find_images(args.reference, args.images)
        written = write_overlays(report, folder / OVERLAY_FOLDER, images, overwrite=args.overwrite)
        print(f"wrote {len(written)} overlay(s) to {folder / OVERLAY_FOLDER}")
    return 0


def _add_evaluate_verb(verbs: argparse._SubParsersAction) -> None:
    evaluate = verbs.add_parser(
        "evaluate",
        help="compare predicted masks with reference masks (Dice, IoU, HD95, ASSD, NSD...)",
        description=(
            "Pair the masks in PRED and GT by case name, check that every case is on both sides with the same "
            "shape and geometry, then compute per case and per class: Dice, IoU, precision, recall, volume "
            "similarity, HD95, ASSD and NSD (distances in mm, from the files' spacing). Writes summary.json "
            "(nnU-Net's keys), cases.csv and summary.md, and prints the table (mean +- std per class). Empty masks: "
            "both empty gives Dice 1 and distances 0; one empty gives Dice 0 and NaN distances, flagged. Exit "
            "status 1, with the list of problems, when cases are missing or geometries disagree."
        ),
        epilog=(
            "examples:\n"
            "  attnseg evaluate predictions data/mni152            # GT: a dataset folder (its labelsTr/)\n"
            "  attnseg evaluate predictions labels/ --labels dataset.json --nsd-tolerance 2 -o reports/\n"
            "  attnseg evaluate predictions data/mni152 --overlays    # + predictions/overlays/CASE_overlay.png\n"
            "  attnseg evaluate predictions labels/ --overlays --images scans/ -o runs/mni/metrics\n"
            "  attnseg evaluate predictions data/ct --num-workers 8     # thousands of cases: 8 processes"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    evaluate.add_argument("predictions", metavar="PRED", help="folder of predicted masks")
    evaluate.add_argument("reference", metavar="GT", help="folder of reference masks, or a dataset folder")
    evaluate.add_argument("--labels", help="dataset.json or labels.json naming the classes (default: GT's)")
    evaluate.add_argument("--nsd-tolerance", type=float, default=1.0, help="NSD tolerance in mm (default 1)")
    evaluate.add_argument("-o", "--output", help="folder for the reports (default: PRED)")
    evaluate.add_argument("--overwrite", action="store_true", help="replace existing reports")
    evaluate.add_argument(
        "--num-workers",
        type=int,
        default=0,
        metavar="N",
        help="processes that read and evaluate cases in parallel, same results as serial (default 0: in this "
        "process; each worker starts like one `attnseg`, so it pays from a few dozen cases on)",
    )
    evaluate.add_argument(
        "--overlays",
        action="store_true",
        help="also draw OUTPUT/overlays/CASE_overlay.png: reference and prediction outlines and the errors on the "
        "slices where they disagree most",
    )
    evaluate.add_argument(
        "--images",
        metavar="DIR",
        help="scans to draw the overlays on (CASE or CASE_0000 files, DICOM folders; default: GT's dataset)",
    )
    evaluate.add_argument("--no-progress", action="store_true", help="no progress bar")
    evaluate.set_defaults(func=cmd_evaluate)


def cmd_export(args: argparse.Namespace) -> int:
    from attnseg.export import export_model_dir

    result = export_model_dir(args.model, args.format, args.output, overwrite=args.overwrite)
    parity = result.parity
    verdict = "passes" if parity.passed else "FAILS"
    print(
        f"wrote {result.model_file} and {result.sidecar_file}; parity with the eager model {verdict}: "
        f"max |difference| {parity.max_abs_diff:.2e} (tolerance {parity.tolerance:.0e}) on inputs "
        + ", ".join(str(tuple(s)) for s in parity.input_shapes)
    )
    return 0 if parity.passed else 1


def _add_export_verb(verbs: argparse._SubParsersAction) -> None:
    export = verbs.add_parser(
        "export",
        help="export a trained model to ONNX or TorchScript, with a parity check and a JSON sidecar",
        description=(
            "Export the network of a model directory (eval mode, any batch size, any spatial size: the exported "
            "graph pads to the network's multiple and crops back), run it in onnxruntime or TorchScript on several "
            "inputs and compare with the eager model (tolerance 1e-4), and write MODEL.json beside it with what a "
            "deployment must reproduce: labels, voxel size, normalisation, slice or patch size, slicing axis, "
            "input and output layout, and the parity result. Exit status 1 if parity fails."
        ),
        epilog=(
            "examples:\n"
            "  attnseg export -m demo_output/model --format onnx              # demo_output/model/model.onnx(.json)\n"
            "  attnseg export -m runs/ct --format torchscript -o deploy/ct.pt"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    export.add_argument("-m", "--model", required=True, help="model directory written by `attnseg train`")
    export.add_argument("--format", required=True, choices=("onnx", "torchscript"), help="export format")
    export.add_argument("-o", "--output", help="file to write (default: MODEL_DIR/model.onnx or model.pt)")
    export.add_argument("--overwrite", action="store_true", help="replace existing files")
    export.set_defaults(func=cmd_export)


def cmd_visualize(args: argparse.Namespace) -> int:
    from attnseg.visualize.scan import visualize_scan

    result = visualize_scan(
        args.model,
        args.input,
        args.output,
        slices=args.slices,
        axis=args.axis,
        count=args.count,
        nifti=args.nifti,
        overwrite=args.overwrite,
        device=args.device,
        batch_size=args.batch_size,
    )
    where = "the whole image" if result.axis is None else f"{result.view} slices {result.slices}"
    print(f"{len(result.maps)} attention map(s) of {result.case_id} on {where}:")
    for path in [*result.figures, *result.volumes]:
        print(f"  {path}")
    return 0


VISUALIZE_EPILOG = """what is drawn:
  Attention U-Net   every gate's coefficients (one panel per gated level and head), resized to the
                    image, one row per slice, one colour bar; the first panel outlines the prediction
  ms_guided         one picture per slice: per scale the position, channel and combined (A_s)
                    attention maps of every refinement step and the scale's prediction, then the
                    average of the scales (the network's output)
  Slices are shown in radiological convention, pixels shaped by the voxel spacing.
outputs (in OUT):
  CASE_attention.png              (Attention U-Net; 2-D images)
  CASE_attention_sliceNNN.png     (ms_guided, one per slice)
  with --nifti: CASE_<map>.nii.gz for every map and CASE_prediction.nii.gz (ms_guided: also
  CASE_scaleN_prediction.nii.gz), each with the input's shape and affine: open them over the scan
examples:
  attnseg visualize -m demo_output/model -i demo_output/data/mni152-tissue/imagesTr/mni152_z076_0000.nii.gz -o attention
  attnseg visualize -m runs/ct -i scan.nii.gz -o attention --slices 40 52 64 --nifti
  attnseg visualize -m runs/ct -i dicom/series_001 -o attention --axis 1 --count 4
"""


def _add_visualize_verb(verbs: argparse._SubParsersAction) -> None:
    visualize = verbs.add_parser(
        "visualize",
        help="draw where a trained model looks on a scan (attention maps), optionally as NIfTI volumes",
        description=(
            "Run the model of MODEL_DIR on one scan as `attnseg predict` does (the model's preprocessing applied and "
            "undone) and draw its attention over the scan: the Attention U-Net's gate coefficients, or the "
            "multi-scale guided network's position, channel and combined attention maps with its per-scale "
            "predictions. Every map is put back on the scan's own grid by the predictor's inverse, so it lines up "
            "with the scan and its mask. 2D and 3D models."
        ),
        epilog=VISUALIZE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    visualize.add_argument(
        "-m", "--model", required=True, metavar="MODEL_DIR", help="model directory written by `attnseg train`"
    )
    visualize.add_argument(
        "-i",
        "--input",
        nargs="+",
        required=True,
        metavar="IMAGE",
        help="the scan: an image file, a DICOM folder, or its channel files",
    )
    visualize.add_argument("-o", "--output", required=True, metavar="OUT", help="folder for the pictures (and volumes)")
    visualize.add_argument(
        "--slices",
        type=int,
        nargs="+",
        metavar="N",
        help="slice indices along --axis (default: those with most predicted foreground)",
    )
    visualize.add_argument(
        "--count",
        type=int,
        default=3,
        metavar="N",
        help="how many slices to choose when --slices is not given (default 3)",
    )
    visualize.add_argument(
        "--axis", type=int, choices=(0, 1, 2), help="voxel axis to cut (default: the axial one, from the scan's header)"
    )
    visualize.add_argument(
        "--nifti", action="store_true", help="also write every map as a NIfTI volume on the scan's grid"
    )
    visualize.add_argument("--batch-size", type=int, default=None, help="slices or windows per forward pass")
    visualize.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 (default: auto)")
    visualize.add_argument("--overwrite", action="store_true", help="replace existing pictures and volumes")
    visualize.set_defaults(func=cmd_visualize)


def cmd_report(args: argparse.Namespace) -> int:
    from attnseg.visualize.report import write_report

    path = write_report(args.run_dir, args.output, overwrite=args.overwrite)
    print(f"wrote {path}")
    return 0


REPORT_EPILOG = """RUN_DIR is one of:
  a model directory from `attnseg train`      config, plan, network, training curves (log.csv)
  a folder holding one in model/              the demo's output: also metrics/ (summary.json) and
                                              pictures/ (overlays, attention panels)
  an evaluation folder from `attnseg evaluate`  metrics per class and per case, overlays/
Beside a model directory the report also reads RUN_DIR/metrics/ (attnseg evaluate -o RUN_DIR/metrics
--overlays) and RUN_DIR/attention/ (attnseg visualize -o RUN_DIR/attention).
examples:
  attnseg report demo_output                      # demo_output/report.html
  attnseg report runs/mni -o mni_report.html --overwrite
"""


def _add_report_verb(verbs: argparse._SubParsersAction) -> None:
    report = verbs.add_parser(
        "report",
        help="one self-contained HTML page with a run's configuration, curves, metrics and pictures",
        description=(
            "Write one HTML file that holds everything a run left behind: its configuration and preprocessing plan, "
            "the training curves, the metrics per class and per case, the overlays and the attention panels. The "
            "pictures are embedded, so the file opens anywhere, without network access, and can be sent as it is."
        ),
        epilog=REPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    report.add_argument(
        "run_dir", metavar="RUN_DIR", help="a model directory, the demo's output, or an evaluation folder"
    )
    report.add_argument("-o", "--output", help="the HTML file to write (default: RUN_DIR/report.html)")
    report.add_argument("--overwrite", action="store_true", help="replace an existing report")
    report.set_defaults(func=cmd_report)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attnseg",
        description="Attention models for medical image segmentation.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"attnseg {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")

    demo = verbs.add_parser(
        "demo",
        help="the main job: train, predict, evaluate and draw on a built-in real dataset (~3 min on a CPU)",
        description=(
            "Run the whole pipeline on the built-in mni152-tissue dataset (the MNI ICBM152 2009a T1 template, "
            "grey and white matter, cut into axial slabs; shipped inside the nilearn wheel, nothing downloaded): "
            "prepare it, train a 2D Attention U-Net on the training slabs, predict the held-out slabs on their "
            "original 1 mm grid, evaluate (Dice, IoU, HD95, ASSD, NSD per class) and draw training curves, "
            "prediction-vs-reference overlays and the attention gates' maps. Takes about 3 minutes on 2 CPU cores "
            "(less with a GPU) and reaches a mean foreground Dice of about 0.90. It demonstrates the pipeline on "
            "real anatomy; it is not a clinical benchmark."
        ),
        epilog=(
            "outputs (in --output):\n"
            "  data/mni152-tissue/  the prepared dataset (kept between runs)\n"
            "  model/               a model directory: attnseg predict -m demo_output/model -i SCAN -o OUT\n"
            "  predictions/         masks of the held-out slabs\n"
            "  metrics/             summary.json, cases.csv, summary.md\n"
            "  pictures/            progress.png, CASE_overlay.png, CASE_attention.png\n"
            "  report.html          all of it on one self-contained page (attnseg report)"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--output", default="demo_output", help="output folder (default: demo_output)")
    demo.add_argument("--epochs", type=int, default=24, help="training epochs of 10 iterations (default 24)")
    demo.add_argument("--overwrite", action="store_true", help="replace the results of an earlier demo run")
    demo.set_defaults(func=cmd_demo)
    _add_dataset_verbs(verbs)
    _add_train_verb(verbs)
    _add_predict_verb(verbs)
    _add_evaluate_verb(verbs)
    _add_export_verb(verbs)
    _add_visualize_verb(verbs)
    _add_report_verb(verbs)
    models = verbs.add_parser(
        "models",
        help="list every network with its parameter count",
        description="List every registered network and its parameter count for one configuration.",
        epilog="example: attnseg models --spatial-dims 3 --in-channels 1 --classes 4 --feature-scale 4 --json",
    )
    _add_network_options(models)
    models.add_argument("--json", action="store_true", help="machine-readable output")
    models.set_defaults(func=cmd_models)

    profile = verbs.add_parser(
        "profile",
        help="parameters, FLOPs, time and peak memory of a forward pass (and a training step with --train)",
        description=(
            "Build one network and time it on random input. The forward pass runs as `attnseg predict` runs "
            "a model: inference mode, channels-last layout, fp16 autocast on CUDA. With --train, also a full "
            "training step exactly as `attnseg train` runs it: the loss it builds for the network (deep "
            "supervision, or the guided-attention loss), the optimizer and gradient clipping, and the memory "
            "layout and mixed precision it chooses (training.layout and training.amp; with auto, the fastest "
            "candidate, timed on this batch); the forward pass then runs under the same choice. --config and "
            "--set take the same training configuration as `attnseg train`. Times are medians; peak memory is "
            "the growth of the allocator's peak (CUDA) or of the process's resident set (CPU)."
        ),
        epilog=(
            "examples:\n"
            "  attnseg profile attention_unet --spatial-dims 3 --size 160 160 96\n"
            "  attnseg profile attention_unet --size 256 256 --batch 4 --train --json\n"
            "  attnseg profile attention_unet --train --set network.aux_outputs=true --set training.amp=off\n"
            "  attnseg profile unet --spatial-dims 3 --size 96 96 96 --train --device cuda"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    profile.add_argument("network", help="a name from `attnseg models`")
    _add_network_options(profile)
    profile.add_argument("--size", type=int, nargs="+", default=[256, 256], help="spatial size (default: 256 256)")
    profile.add_argument("--batch", type=int, default=1, help="batch size (default: 1)")
    profile.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default: cpu)")
    profile.add_argument("--repeats", type=int, default=3, help="timed repeats; the median is shown (default: 3)")
    profile.add_argument("--train", action="store_true", help="also time a training step as `attnseg train` runs it")
    profile.add_argument("--config", type=Path, help="with --train: a training configuration (YAML)")
    profile.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="with --train: override a configuration key"
    )
    profile.add_argument("--json", action="store_true", help="machine-readable output")
    profile.set_defaults(func=cmd_profile)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except AttnsegError as error:
        if args.debug:
            raise
        print(f"attnseg: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
