"""``attnseg predict -m MODEL -i INPUT -o OUTPUT``: segment new scans with a trained model or an ensemble, on
one process or shared out over many under torchrun; or ``--dicomweb URL --study UID``: a study from a PACS,
its SEGs stored back."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from attnseg.cli.options import Verbs
from attnseg.errors import ConfigError

if TYPE_CHECKING:
    from attnseg.inference.predictor import Predictor

EPILOG = """\
INPUT is an image file, a folder of image files (nnU-Net names CASE_0000, CASE_0001 are grouped into one
multi-channel case), a DICOM series folder or a tree of them (each series' mask is written as .nrrd, with
--output-format dicom-seg as one DICOM Segmentation OUTPUT/<series>.seg.dcm, or with --format dicom as a
DICOM series folder OUTPUT/<series> in the scan's study: Secondary Capture slices of label values).

PACS: --dicomweb URL --study UID (instead of -i) retrieves the study's image series over DICOMweb, writes
a SEG per series and with --store sends them back (STOW-RS) once every series is predicted. SEGs already in
OUTPUT are found after the search, before any retrieval: refused, or with --overwrite replaced, or with
--skip-existing kept (their series not retrieved). Credentials:
$ATTNSEG_DICOMWEB_CREDENTIALS or --dicomweb-credentials FILE, never echoed. See docs/dicom.md.

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

quality control: OUTPUT/qc.csv lists every case predicted, worst first: its verdict (ok, check, fail), its
predicted Dice with an interval, and what is wrong in words (scan unlike the training scans, mask
implausible, network unsure); qc.json holds every measure. --no-qc skips it. See docs/quality-control.md.

exit status: 0 every case written or complete; 1 some cases failed (listed); 2 nothing ran (bad option,
model or input, or outputs in the way).
See docs/distributed-prediction.md.
"""


def add_parser(verbs: Verbs) -> None:
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
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    predict.add_argument("-m", "--model", action="append", required=True, help="model directory (repeat to ensemble)")
    predict.add_argument("-i", "--input", nargs="+", help="image file(s), folder(s) or DICOM folder(s) or trees")
    predict.add_argument("-o", "--output", required=True, help="folder for the masks")
    predict.add_argument("--tta", action="store_true", help="mirroring test-time augmentation (4x slower in 2D)")
    predict.add_argument(
        "--probabilities",
        "--save-probabilities",
        action="store_true",
        help="also write CASE_probabilities (K channels), calibrated with the temperature the model fitted on its "
        "validation cases (MODEL/calibration.json)",
    )
    predict.add_argument(
        "--no-qc",
        action="store_true",
        help="skip the quality control (by default OUTPUT/qc.json and qc.csv: per case, flags for scans unlike the "
        "training scans and implausible masks, a predicted Dice and a verdict ok/check/fail; docs/quality-control.md)",
    )
    _add_postprocessing_options(predict)
    predict.add_argument(
        "--format",
        "--output-format",
        help="output ending, e.g. .nii.gz or .nrrd (default: the input's; for DICOM the model's "
        "prediction.dicom_output_format, else .nrrd), 'dicom': a DICOM series per DICOM input, in its study, or "
        "'dicom-seg': one DICOM Segmentation per DICOM series (OUTPUT/<series>.seg.dcm)",
    )
    _add_pacs_options(predict)
    _add_compute_options(predict)
    _add_run_options(predict)
    predict.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from attnseg.inference.batch import predict_cases
    from attnseg.inference.predictor import Predictor

    _check_input_options(args)
    predictor = Predictor(
        args.model,
        device=args.device,
        mirror=args.tta,
        batch_size=args.batch_size,
        overlap=args.overlap,
        largest_component=args.largest_component,
        amp=args.amp,
        quality_control=not args.no_qc,
    )
    if args.dicomweb is not None:
        return _run_pacs(args, predictor)
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


def _check_input_options(args: argparse.Namespace) -> None:
    """Refuse, before a model is loaded, option sets that cannot run, naming the option missing or in the way:
    PACS options only with --dicomweb (checked first: ``--study UID`` alone means a PACS run without its URL,
    not a missing -i), exactly one of -i and --dicomweb, and a study with --dicomweb."""
    if args.dist_timeout <= 0:
        raise ConfigError(f"--dist-timeout must be positive, got {args.dist_timeout:g}")
    if args.dicomweb is None:
        given = [name for name in ("study", "series", "store", "dicomweb_credentials") if getattr(args, name)]
        if given:
            options = ", ".join("--" + name.replace("_", "-") for name in given)
            raise ConfigError(
                f"{options} given without --dicomweb URL: the PACS round trip needs the archive's DICOMweb root "
                "(--dicomweb URL --study UID, instead of -i)"
            )
        if args.input is None:
            raise ConfigError("give either -i INPUT or --dicomweb URL --study UID")
    elif args.input is not None:
        raise ConfigError("give either -i INPUT or --dicomweb URL --study UID, not both")
    elif not args.study:
        raise ConfigError("--dicomweb needs --study STUDY_UID")


def _run_pacs(args: argparse.Namespace, predictor: Predictor) -> int:
    """The PACS round trip: retrieve the study's series, write a SEG per series, store them with --store."""
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
        skip_existing=args.skip_existing,
        progress=not args.no_progress,
    )
    print(result.summary(args.dicomweb), flush=True)
    return 0


def _add_pacs_options(predict: argparse.ArgumentParser) -> None:
    """The PACS round trip instead of -i: the archive's DICOMweb root, the study (and series), storing the
    SEGs back, and where the credentials are (never on the command line itself)."""
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


def _add_postprocessing_options(predict: argparse.ArgumentParser) -> None:
    """--largest-component or --no-postprocessing, or neither: what the model's postprocessing.json says."""
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


def _add_compute_options(predict: argparse.ArgumentParser) -> None:
    """How the network runs: slices or windows per pass, sliding-window overlap, device and precision."""
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


def _add_run_options(predict: argparse.ArgumentParser) -> None:
    """What happens to outputs already there (resuming a killed run), and a run over many scans: background
    loading, the wait for the other processes under torchrun, the progress bar."""
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
