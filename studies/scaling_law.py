"""Does a video model learn physical laws if we scale it? The paper's Fig. 3, on Ray.

    python studies/scaling_law.py --config configs/studies/smoke.yaml            # embedded Ray
    python studies/scaling_law.py --config configs/studies/paper.yaml --plan     # cost, no run
    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python studies/scaling_law.py --config configs/studies/paper.yaml        # on a cluster

Steps (phyray/study/grid.py): [1] Ray, [2] MLflow experiment and parent run, [3] per scenario
the datasets, its VAE and the latents (cached in `data_dir`), [4] the scenarios x models x data
sizes grid on Ray Tune, one TorchTrainer per trial, each rolled out and scored on the ID and
OOD sets, [5] the scaling curves and results table onto the parent run. Rerun the same command
to finish a study that was stopped: finished trials are skipped.
"""

from __future__ import annotations

import argparse
import sys

from phyray.config import ConfigError
from phyray.study.settings import load_study_config
from phyray.tracking import ui_hint


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="configs/studies/<name>.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a study-config field, e.g. dit.steps=100 or output_dir=/mnt/shared/studies")
    parser.add_argument("--plan", action="store_true",
                        help="print the grid with tokens, FLOPs and GPU-hours per trial, and run nothing")
    parser.add_argument("--gpu", help="--plan: GPU for the GPU-hours (default: the config's plan.gpu)")
    parser.add_argument("--mfu", type=float, help="--plan: assumed MFU (default: the config's plan.mfu)")
    parser.add_argument("--verbose", action="store_true",
                        help="print Ray's own messages here too (by default they go to <study dir>/ray.log)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = list(args.set)
    overrides += [f"plan.gpu={args.gpu}"] if args.gpu else []
    overrides += [f"plan.mfu={args.mfu}"] if args.mfu else []
    try:
        cfg = load_study_config(args.config, overrides)
        if args.plan:
            from phyray.study.plan import cost_plan, format_plan

            print(format_plan(cost_plan(cfg)))
            return 0
        from phyray.study.grid import run_study

        result = run_study(cfg, verbose=args.verbose)
    except ConfigError as err:
        print(f"scaling_law: error: {err}", file=sys.stderr)
        return 2
    print(result.report["summary"].read_text())
    print(f"study: {result.study_dir}")
    print(f"report: {result.report['summary'].parent}")
    print(f"mlflow: {result.tracking_uri} (parent run {result.parent_run_id}); UI: {ui_hint(result.tracking_uri)}")
    if result.failed:
        print(f"{len(result.failed)} trials failed: {', '.join(result.failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
