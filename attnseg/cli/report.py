"""``attnseg report RUN_DIR``: one self-contained HTML page with everything a run left behind."""

from __future__ import annotations

import argparse

from attnseg.cli.options import Verbs

EPILOG = """RUN_DIR is one of:
  a model directory from `attnseg train`      config, plan, network, training curves (log.csv)
  a folder holding one in model/              the demo's output: also metrics/ (summary.json) and
                                              pictures/ (overlays, attention panels)
  an evaluation folder from `attnseg evaluate`  metrics per class and per case, overlays/
  a predictions folder from `attnseg predict`   its quality control (qc.json): verdicts and flags per
                                              case, worst first, for scans without references
Beside a model directory the report also reads RUN_DIR/metrics/ (attnseg evaluate -o RUN_DIR/metrics
--overlays) and RUN_DIR/attention/ (attnseg visualize -o RUN_DIR/attention).
examples:
  attnseg report demo_output                      # demo_output/report.html
  attnseg report runs/mni -o mni_report.html --overwrite
  attnseg report masks/                           # which of the new scans' masks to check first
"""


def add_parser(verbs: Verbs) -> None:
    report = verbs.add_parser(
        "report",
        help="one self-contained HTML page with a run's configuration, curves, metrics and pictures",
        description=(
            "Write one HTML file that holds everything a run left behind: its configuration and preprocessing plan, "
            "the training curves, the metrics per class and per case, the overlays and the attention panels. The "
            "pictures are embedded, so the file opens anywhere, without network access, and can be sent as it is."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    report.add_argument(
        "run_dir",
        metavar="RUN_DIR",
        help="a model directory, the demo's output, an evaluation folder or a predictions folder",
    )
    report.add_argument("-o", "--output", help="the HTML file to write (default: RUN_DIR/report.html)")
    report.add_argument("--overwrite", action="store_true", help="replace an existing report")
    report.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from attnseg.visualize.report import write_report

    path = write_report(args.run_dir, args.output, overwrite=args.overwrite)
    print(f"wrote {path}")
    return 0
