"""The `phyray` command line: thin glue that parses arguments, calls the library, prints results.

Groups: `phyray data ...`, `phyray model ...`, `phyray eval ...`. Each group has one
`_add_<group>_commands(subparsers)` function below that declares its arguments and binds a
handler; no logic lives only here.
"""

from __future__ import annotations

import argparse
import sys


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


# ---- data ----------------------------------------------------------------------------------


def _data_generate(args: argparse.Namespace) -> int:
    from phyray.config import BALL_SCENARIOS, ConfigError, load_data_config
    from phyray.data.generate import generate_dataset

    if args.scenario not in BALL_SCENARIOS:
        raise CliError(f"--scenario: unknown {args.scenario!r}; choose from {', '.join(BALL_SCENARIOS)}")
    overrides = list(args.set)
    if args.resolution is not None:
        overrides.append(f"render.resolution={args.resolution}")
    try:
        cfg = load_data_config(args.scenario, overrides)
        manifest = generate_dataset(
            cfg, args.split, args.size, args.out, seed=args.seed, num_workers=args.num_workers,
            progress=not args.quiet,
        )
    except ConfigError as err:
        raise CliError(str(err)) from None
    counts = ", ".join(f"{k}: {v}" for k, v in manifest["counts"].items())
    print(
        f"{args.out}: {manifest['num_videos']} videos in {manifest['num_shards']} shards "
        f"({manifest['bytes'] / 1e6:.1f} MB; {counts})"
    )
    return 0


def _add_data_commands(groups) -> None:
    data = groups.add_parser("data", help="generate and inspect datasets").add_subparsers(dest="command", required=True)
    gen = data.add_parser("generate", help="simulate, render and write a dataset as Parquet shards")
    gen.add_argument("--scenario", required=True, help="uniform_motion, collision or parabola")
    gen.add_argument("--size", default=None, help="30K, 300K, 3M or a count (200, 2K); eval splits default to the paper's sizes")
    gen.add_argument("--split", default="train", choices=["train", "eval_id", "eval_ood"])
    gen.add_argument("--out", required=True, help="output directory")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--resolution", type=int, default=None, help="frame side in pixels (default: the config's, 128)")
    gen.add_argument("--num-workers", type=int, default=None, help="concurrent shard tasks (default: all CPUs)")
    gen.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a data-config field")
    gen.add_argument("--quiet", action="store_true", help="no progress bar")
    gen.set_defaults(handler=_data_generate)


# ---- model ---------------------------------------------------------------------------------


def _model_info(args: argparse.Namespace) -> int:
    import json

    from phyray.models.info import model_info

    vae = {"vae": args.vae} if args.vae else {}  # else model_info's default
    try:
        info = model_info(args.model, args.resolution, args.frames, patch=args.patch, **vae)
    except ValueError as err:
        raise CliError(str(err)) from None
    if args.json:
        print(json.dumps(info))
        return 0
    rows = [
        ("model", f"{info['model']} ({info['layers']} layers x {info['hidden_size']} wide x {info['heads']} heads)"),
        ("parameters", f"{info['params'] / 1e6:.1f}M ({info['params']:,})"),
        ("vae", info["vae"]),
        ("video (T, H, W)", f"{info['frames']} x {info['resolution']} x {info['resolution']}"),
        ("latent (C, T, H, W)", " x ".join(map(str, info["latent_shape"]))),
        ("patch (t, h, w)", " x ".join(map(str, info["patch"]))),
        ("tokens per video", f"{info['tokens_per_video']:,}"),
        ("forward FLOPs / video", f"{info['forward_flops_per_video']:.3e}"),
        ("train FLOPs / video", f"{info['train_flops_per_video']:.3e}"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return 0


def _add_model_commands(groups) -> None:
    model = groups.add_parser("model", help="inspect model presets").add_subparsers(dest="command", required=True)
    info = model.add_parser("info", help="parameters, latent shape, tokens and FLOPs of a DiT preset")
    info.add_argument("--model", required=True, help="DiT-S, DiT-B, DiT-L, DiT-XL (paper) or DiT-T, DiT-M (CPU)")
    info.add_argument("--resolution", type=int, default=128, help="frame side in pixels")
    info.add_argument("--frames", type=int, default=32, help="frames per video")
    info.add_argument("--vae", default=None, help="VAE preset: compression and latent channels (default vae-f8t4c4)")
    info.add_argument("--patch", type=int, nargs=3, default=None, metavar=("PT", "PH", "PW"),
                      help="spacetime patch (default 1 2 2)")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(handler=_model_info)


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="phyray", description=__doc__.splitlines()[0])
    groups = parser.add_subparsers(dest="group", required=True)
    _add_data_commands(groups)
    _add_model_commands(groups)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except CliError as err:
        print(f"phyray: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
