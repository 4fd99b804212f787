"""The `phyray` command line: thin glue that parses arguments, calls the library, prints results.

Groups: `phyray data ...`, `phyray model ...`, `phyray eval ...`, `phyray train`,
`phyray study ...`. Each group has one
`_add_<group>_commands(subparsers)` function below that declares its arguments and binds a
handler; no logic lives only here.
"""

from __future__ import annotations

import argparse
import sys

from phyray.artifacts import ProductError
from phyray.config import (
    SIMULATED_SCENARIOS,
    SPLITS,
    ConfigError,
    TrainConfig,
    load_config,
    load_scenario_config,
)
from phyray.presets import ROLLOUT_PRECISIONS

# Each command imports the rest (torch, Ray, MLflow and the phyray modules built on them) when it
# runs, so `phyray --help` and a bad argument answer at once.


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1 (a worker count of 0 would silently mean 'all')."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


# ---- data ----------------------------------------------------------------------------------


def _data_generate(args: argparse.Namespace) -> int:
    from phyray.data.generate import generate_dataset

    try:
        if args.scenario == "combinatorial":
            manifest = _generate_combinatorial(args)
        elif args.scenario in SIMULATED_SCENARIOS:
            overrides = list(args.set)
            if args.resolution is not None:
                overrides.append(f"render.resolution={args.resolution}")
            manifest = generate_dataset(
                load_scenario_config(args.scenario, overrides), args.split, args.size, args.out, seed=args.seed,
                num_workers=args.num_workers, progress=not args.quiet,
            )
        else:
            choices = ", ".join((*SIMULATED_SCENARIOS, "combinatorial"))
            raise CliError(f"--scenario: unknown {args.scenario!r}; choose from {choices}")
    except ConfigError as err:
        raise CliError(str(err)) from None
    except ProductError as err:
        raise CliError(f"--out {err}") from None
    counts = ", ".join(f"{k}: {v}" for k, v in manifest["counts"].items())
    print(
        f"{args.out}: {manifest['num_videos']} videos in {manifest['num_shards']} shards "
        f"({manifest['bytes'] / 1e6:.1f} MB; {counts})"
    )
    return 0


def _generate_combinatorial(args: argparse.Namespace) -> dict:
    from phyray.data.combinatorial import generate_combinatorial
    from phyray.sim.phyre import PhyreUnavailable, parse_templates

    if not (args.templates and args.seeds and args.trials):
        raise ConfigError("--scenario combinatorial needs --templates, --seeds and --trials")
    try:
        templates = parse_templates(args.templates)
    except ValueError as err:
        raise ConfigError(f"--templates: {err}") from None
    try:
        return generate_combinatorial(
            templates, args.seeds, args.trials, args.split, args.out, num_workers=args.num_workers,
            progress=not args.quiet,
        )
    except PhyreUnavailable as err:
        raise CliError(str(err)) from None


def _data_resample(args: argparse.Namespace) -> int:
    from phyray.data.resample import resample_dataset

    try:
        manifest = resample_dataset(args.shards, args.resolution, args.out, args.frames, args.num_workers)
    except ProductError as err:
        raise CliError(f"--out {err}") from None
    except ValueError as err:  # "resolution: ..." or "num_frames: ...": name the flag
        message = str(err)
        for field, flag in (("num_frames:", "--frames:"), ("resolution:", "--resolution:")):
            message = flag + message.removeprefix(field) if message.startswith(field) else message
        raise CliError(message) from None
    print(f"{args.out}: {manifest['num_videos']} videos at {manifest['resolution']}², {manifest['num_frames']} frames")
    return 0


VERBOSE_HELP = "print Ray's own messages here too (by default they go to ray.log beside --out)"


def _ray_logged(handler):
    """A data command whose Ray messages phyray cannot act on (an actor pool's core-worker line,
    worker start-up warnings) go to ray.log beside its --out, as a study's go to its directory;
    with --verbose they stay where Ray prints them. They are collected in a scratch file first,
    so a command refused for bad input leaves nothing behind. The scratch file lives in the
    nearest existing directory on --out's path, so even a killed command's stays there."""

    def run(args: argparse.Namespace) -> int:
        import tempfile
        from pathlib import Path

        from phyray.runtime import RayChatter

        if args.verbose:
            return handler(args)
        nearest = next(directory for directory in Path(args.out).absolute().parents if directory.is_dir())
        try:
            with tempfile.NamedTemporaryFile(dir=nearest, prefix=".ray-", suffix=".log", delete=False) as scratch:
                chatter = RayChatter(Path(scratch.name), verbose=False)
        except OSError:  # nowhere on --out's path to write: the command itself says so
            return handler(args)
        try:
            with chatter:
                return handler(args)
        finally:
            _keep_ray_log(chatter, Path(args.out).absolute().parent / "ray.log")

    return run


def _keep_ray_log(chatter, log) -> None:
    """Append what `chatter` collected to `log` and say where; where its directory does not exist
    (a command refused early), print it on stderr as Ray would have, leaving no file behind."""
    scratch, lines = chatter.path, chatter.lines
    if lines and log.parent.is_dir():
        with open(log, "ab") as kept:
            kept.write(scratch.read_bytes())
        print(chatter.summary(log))
    elif lines:
        sys.stderr.write(scratch.read_text())
    scratch.unlink()


def _add_data_commands(groups) -> None:
    data = _commands(groups.add_parser("data", help="generate and inspect datasets"))
    gen = data.add_parser("generate", help="simulate, render and write a dataset as Parquet shards")
    gen.add_argument(
        "--scenario", required=True,
        help="uniform_motion, collision, parabola, combinatorial, or a probe's scenario: probe-<pair>, gap-<layout>, "
             "flip-<set>, hull-<variant>, compose-<variant> (the study's names)",
    )
    gen.add_argument("--size", default=None, help="30K, 300K, 3M or a count (200, 2K); eval splits default to the paper's sizes")
    gen.add_argument(
        "--split", default="train",
        choices=[*SPLITS, "eval_in_template", "eval_out_of_template", "dev_in_template", "dev_out_of_template"],
        help="ball scenes: train, eval_id, eval_ood (test) or dev_id, dev_ood (for choosing settings); combinatorial: train, eval_in_template, eval_out_of_template (test) or dev_in_template, dev_out_of_template",
    )
    gen.add_argument("--out", required=True, help="output directory")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--resolution", type=int, default=None, help="frame side in pixels (default: the config's, 128)")
    gen.add_argument("--num-workers", type=positive_int, default=None, help="concurrent shard tasks (default: all CPUs)")
    gen.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a data-config field")
    gen.add_argument("--templates", help="combinatorial: 6, 30, 60, heldout, or ids/ranges (10003,10060-10069)")
    gen.add_argument("--seeds", type=int, help="combinatorial: task seeds per template")
    gen.add_argument("--trials", type=int, help="combinatorial: red-ball placements per seed")
    gen.add_argument("--quiet", action="store_true", help="no progress bar")
    gen.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    gen.set_defaults(handler=_ray_logged(_data_generate))
    res = data.add_parser("resample", help="a dataset at another side (area-averaged) and frame count, as planar RGB")
    res.add_argument("--shards", required=True, help="source dataset directory (e.g. PHYRE scenes at 256²)")
    res.add_argument("--resolution", required=True, type=positive_int, help="frame side; must divide the source's")
    res.add_argument("--frames", type=positive_int, default=None, help="keep the first N frames (default: all)")
    res.add_argument("--out", required=True, help="output directory")
    res.add_argument("--num-workers", type=positive_int, default=None, help="concurrent shard tasks (default: all CPUs)")
    res.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    res.set_defaults(handler=_ray_logged(_data_resample))
    enc = data.add_parser("encode", help="cache latents of a dataset with a trained VAE")
    enc.add_argument("--shards", required=True, help="pixel dataset directory")
    enc.add_argument("--vae", required=True, help="trained VAE: its run directory or export/model.pt")
    enc.add_argument("--out", required=True, help="latent dataset directory")
    enc.add_argument("--cond-frames", type=int, default=3, help="conditioning frames c (3; PHYRE: 1)")
    enc.add_argument("--num-workers", type=positive_int, default=None, help="encoder actors (default: GPUs, else CPUs)")
    enc.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    enc.set_defaults(handler=_ray_logged(_data_encode))


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
        ("model", info["model"]),
        ("layers x width x heads", f"{info['layers']} x {info['hidden_size']} x {info['heads']}"),
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
    commands = _commands(groups.add_parser("model", help="inspect model presets"))
    info = commands.add_parser("info", help="parameters, latent shape, tokens and FLOPs of a DiT")
    info.add_argument("--model", required=True, help="DiT-S/B/L/XL (paper) or DiT-T/M (CPU)")
    info.add_argument("--resolution", type=int, default=128, help="frame side in pixels")
    info.add_argument("--frames", type=int, default=32, help="frames per video")
    info.add_argument("--vae", default=None,
                      help="VAE preset: compression and latent channels (default vae-f8t4c4)")
    info.add_argument("--patch", type=int, nargs=3, default=None, metavar=("PT", "PH", "PW"),
                      help="spacetime patch (default 1 2 2)")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(handler=_model_info)


# ---- train -----------------------------------------------------------------------------------


def _train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from phyray.train.trainer import CONFIG_FILE, train

    try:
        if args.resume:
            run_dir = Path(args.resume)
            if not (run_dir / CONFIG_FILE).is_file():
                run_dir = Path(args.output_dir) / args.resume
            config_path = run_dir / CONFIG_FILE
            if not config_path.is_file():
                raise ConfigError(f"--resume: no run {args.resume!r} (looked for {config_path})")
        elif args.config:
            config_path = Path(args.config)
        else:
            raise ConfigError("give --config FILE, or --resume RUN")
        cfg = load_config(TrainConfig, config_path, args.set)
        run = train(cfg, resume=bool(args.resume))
    except ConfigError as err:
        raise CliError(str(err)) from None
    print(f"{cfg.name}: step {run.metrics.get('step')} loss {run.metrics.get('loss'):.4g}; model -> {run.export}")
    print(f"mlflow: {run.tracking_uri} (run {run.run_id})")
    return 0


def _data_encode(args: argparse.Namespace) -> int:
    from phyray.data.latents import encode_dataset

    try:
        manifest = encode_dataset(args.shards, args.vae, args.out, args.cond_frames, args.num_workers)
    except (ConfigError, ProductError, FileNotFoundError) as err:
        raise CliError(str(err)) from None
    print(f"{args.out}: latents of {manifest['num_videos']} videos in {manifest['num_shards']} shards")
    return 0


def _add_train_commands(groups) -> None:
    train = groups.add_parser("train", help="train a VAE or DiT on Ray Train + DeepSpeed")
    train.add_argument("--config", help="configs/train/<name>.yaml")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    train.add_argument("--resume", metavar="RUN", help="continue a run (its name or directory) from its last checkpoint")
    train.add_argument("--output-dir", default="runs/train", help="where --resume looks for RUN by name")
    train.set_defaults(handler=_train)


# ---- eval ------------------------------------------------------------------------------------


def _eval_physics(args: argparse.Namespace) -> int:
    from phyray.eval.report import evaluate_physics, format_summary, write_report

    try:
        rows = evaluate_physics(
            args.rollouts, args.reference, parser=args.parser, cond_frames=args.cond_frames,
            ssim=not args.no_ssim, device=args.device, progress=not args.quiet,
        )
        json_path, csv_path = write_report(rows, args.out)
    except (ProductError, ValueError) as err:
        raise CliError(str(err)) from None
    print(format_summary(rows))
    print(f"report: {json_path} and {csv_path}")
    return 0


def _eval_rollout(args: argparse.Namespace) -> int:
    from phyray.eval.rollouts import rollout_dataset

    try:
        manifest = rollout_dataset(
            args.model, args.reference, args.out, args.sample_steps, args.batch_size, args.seed, args.device,
            resolution=args.resolution, precision=args.precision,
        )
    except (ConfigError, ProductError, FileNotFoundError, ValueError) as err:
        raise CliError(str(err)) from None
    print(f"{args.out}: {manifest['num_videos']} rollouts ({manifest['identity']['settings']['sample_steps']} DDIM steps); "
          f"score them with: phyray eval physics --rollouts {args.out} --reference {args.reference} --out report.json")
    return 0


def _eval_video(args: argparse.Namespace) -> int:
    from pathlib import Path

    from phyray.eval.fvd import default_weights
    from phyray.eval.lpips import LPIPS_SKIPPED, LpipsWeightsNotFound
    from phyray.eval.scenes import (
        SceneScoring,
        add_frozen,
        score_frozen_set,
        score_scene_set,
        summarize_scenes,
        write_scene_report,
    )

    weights = args.fvd_weights or default_weights()
    for name, path in (("--lpips-backbone", args.lpips_backbone), ("--fvd-weights", args.fvd_weights)):
        if path is not None and not Path(path).is_file():
            raise CliError(f"{name}: {path} does not exist")
    scoring = SceneScoring(
        cond_frames=args.cond_frames, ssim=not args.no_ssim, abnormal=not args.no_abnormal,
        lpips_backbone=args.lpips_backbone, fvd_weights=None if args.no_fvd else weights, fvd_videos=args.fvd_videos,
    )
    try:
        scores = score_scene_set(args.rollouts, args.reference, scoring, device=args.device)
        frozen = score_frozen_set(args.reference, scoring, device=args.device)  # nothing moving, beside each video
        records = add_frozen(scores["records"], frozen)
        rows = [*summarize_scenes(records), *scores["fvd"]]
        paths = write_scene_report(rows, records, args.out)
    except (ProductError, ValueError, LpipsWeightsNotFound) as err:
        raise CliError(str(err)) from None
    if scoring.lpips_backbone is None:
        print(LPIPS_SKIPPED)
    if scoring.fvd_weights is None and not args.no_fvd:
        print("fvd: skipped, no I3D weights; run `bash scripts/fetch_weights.sh` or give --fvd-weights")
    for row in rows:
        if row["template"] == "all" and not row["metric"].startswith("abnormal_"):
            interval = "" if row["ci_low"] is None else f" [{row['ci_low']:.4g}, {row['ci_high']:.4g}]"
            print(f"{row['split']:<22} {row['resolution']:>4} {row['metric']:<20} {row['value']:.4g}{interval} (n={row['n']})")
    print(f"report: {', '.join(str(p) for p in paths)}")
    return 0


def _eval_abnormal(args: argparse.Namespace) -> int:
    from pathlib import Path

    from phyray.eval.abnormal import (
        CHECKS,
        abnormal_records,
        summarize_abnormal,
        write_abnormal_report,
    )

    out = Path(args.out or Path("runs/reports") / f"abnormal-{Path(args.videos).name}" / "report.json")
    try:
        records = abnormal_records(args.videos, resolution=args.resolution, progress=not args.quiet)
        rows = summarize_abnormal(records)
        json_path, csv_path, videos_path = write_abnormal_report(rows, records, out)
    except (ProductError, ValueError) as err:  # ShardError, UnknownPalette, a bad --out
        raise CliError(str(err)) from None
    print(f"{'split':<22} {'res':>4} {'n':>6} {'abnormal':>8}  " + " ".join(f"{c[:10]:>10}" for c in CHECKS))
    by_group: dict[tuple, dict[str, float]] = {}
    for row in (r for r in rows if r["template_id"] == "all"):
        by_group.setdefault((str(row["split"]), row["resolution"], row["n"]), {})[row["metric"]] = row["value"]
    for (split, resolution, n), values in by_group.items():
        cells = " ".join(f"{values[f'abnormal_rate/{c}']:>10.3f}" for c in CHECKS)
        print(f"{split:<22} {resolution:>4} {n:>6} {values['abnormal_rate']:>8.3f}  {cells}")
    print(f"report: {json_path} and {csv_path}; per video: {videos_path}")
    return 0


def _eval_corrupt(args: argparse.Namespace) -> int:
    from phyray.eval.corrupt import CORRUPTIONS, corrupt_dataset

    kinds = list(CORRUPTIONS) if args.kinds == "all" else [k.strip() for k in args.kinds.split(",")]
    try:
        manifest = corrupt_dataset(args.reference, args.out, kinds, seed=args.seed, with_clean=not args.no_clean)
    except (ProductError, ValueError) as err:
        raise CliError(str(err)) from None
    counts = ", ".join(f"{k}: {v}" for k, v in manifest["counts"].items())
    skipped = ", ".join(f"{k}: {v}" for k, v in manifest["skipped"].items() if v) or "none"
    print(f"{args.out}: {manifest['num_videos']} labelled videos ({counts}); skipped, no suitable object: {skipped}")
    return 0


def _add_eval_commands(groups) -> None:
    evaluate = _commands(groups.add_parser("eval", help="roll out and score"))
    roll = evaluate.add_parser("rollout", help="continue every video of a dataset from its first c frames with a trained DiT")
    roll.add_argument("--model", required=True, help="DiT run directory or its export/model.pt")
    roll.add_argument("--reference", required=True, help="dataset to continue (pixel shards)")
    roll.add_argument("--out", required=True, help="rollout dataset directory (resumable)")
    roll.add_argument("--sample-steps", type=int, default=None, help="DDIM steps (default: the run's diffusion.sample_steps)")
    roll.add_argument("--batch-size", type=int, default=16, help="videos sampled together")
    roll.add_argument("--seed", type=int, default=0, help="rollout seed, mixed with each video's own seed")
    roll.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    roll.add_argument("--resolution", type=positive_int, default=None,
                      help="the DiT's side, if the reference is stored larger (area-averaged first; e.g. a bench suite)")
    roll.add_argument("--precision", choices=ROLLOUT_PRECISIONS, default="fp32",
                      help="what the VAE and DiT compute in: fp32 (default) or bf16 autocast (faster on a GPU or a "
                           "CPU with bf16 units; other pixels, so other rollouts)")
    roll.set_defaults(handler=_eval_rollout)
    physics = evaluate.add_parser("physics", help="velocity error, parse failures, PSNR and SSIM of rollouts")
    physics.add_argument("--rollouts", required=True, help="dataset of generated videos, joined to --reference by video_id")
    physics.add_argument("--reference", required=True, help="the dataset the rollouts were conditioned on")
    physics.add_argument("--out", required=True, help="report JSON path; the CSV is written beside it (same stem)")
    physics.add_argument("--parser", default="subpixel",
                         help="ball parser: subpixel (coverage-weighted, default) or threshold (the paper's mask)")
    physics.add_argument("--cond-frames", type=int, default=3, help="conditioning frames c, not scored (3; PHYRE 1)")
    physics.add_argument("--no-ssim", action="store_true", help="skip SSIM (0.2-0.35 CPU-s per 128² video)")
    physics.add_argument("--device", default="cpu", help="torch device for PSNR and SSIM")
    physics.add_argument("--quiet", action="store_true", help="no progress bar")
    physics.set_defaults(handler=_eval_physics)
    video = evaluate.add_parser("video", help="PSNR, SSIM, LPIPS, FVD and the abnormal rate of PHYRE rollouts")
    video.add_argument("--rollouts", required=True, help="dataset of generated videos, joined to --reference by video_id")
    video.add_argument("--reference", required=True, help="the PHYRE dataset the rollouts were conditioned on")
    video.add_argument("--out", required=True, help="report JSON path; its CSV and the per-video videos.csv go beside it")
    video.add_argument("--cond-frames", type=int, default=1, help="conditioning frames c, not scored (PHYRE: 1)")
    video.add_argument("--lpips-backbone", help="local torchvision AlexNet state dict (default: LPIPS skipped)")
    video.add_argument("--fvd-weights", help="I3D checkpoint (default: .weights/i3d-kinetics-400.ckpt if fetched)")
    video.add_argument("--fvd-videos", type=positive_int, help="compare the first N videos only (paper: 600 in, 500 out)")
    video.add_argument("--no-fvd", action="store_true", help="skip FVD")
    video.add_argument("--no-ssim", action="store_true", help="skip SSIM")
    video.add_argument("--no-abnormal", action="store_true", help="skip the abnormal-rate judge")
    video.add_argument("--device", default="cpu", help="torch device")
    video.set_defaults(handler=_eval_video)
    abnormal = evaluate.add_parser("abnormal", help="abnormal rate of PHYRE videos from their pixels alone (no reference)")
    abnormal.add_argument("--videos", required=True, help="dataset of PHYRE videos: rollouts or ground truth")
    abnormal.add_argument("--out", default=None,
                          help="report JSON path; its CSV and the per-video abnormal.csv are written beside it "
                               "(default runs/reports/abnormal-<videos dir>/report.json)")
    abnormal.add_argument("--resolution", type=positive_int, default=None,
                          help="area-average the frames to this side first (default: as stored)")
    abnormal.add_argument("--quiet", action="store_true", help="no progress bar")
    abnormal.set_defaults(handler=_eval_abnormal)
    corrupt = evaluate.add_parser("corrupt", help="labelled physics violations made from PHYRE ground truth")
    corrupt.add_argument("--reference", required=True, help="PHYRE ground-truth dataset (palette-encoded)")
    corrupt.add_argument("--out", required=True, help="directory for the labelled copy")
    corrupt.add_argument("--kinds", default="all",
                         help="all, or a comma list of vanish, appear, teleport, morph, freeze, interpenetrate, "
                              "static_moves, colour_swap")
    corrupt.add_argument("--seed", type=int, default=0, help="seed of the random objects, frames and edits")
    corrupt.add_argument("--no-clean", action="store_true", help="leave out the unchanged copies (label 'none')")
    corrupt.set_defaults(handler=_eval_corrupt)


# ---- bench -----------------------------------------------------------------------------------

DEFAULT_BENCH_DIR = "runs/bench"


def _bench_suite(args: argparse.Namespace):
    """The suite named by --suite (shrunk by --videos-per-split) and its reference sets."""
    from pathlib import Path

    from phyray.benchmark.suites import get_suite, reference_sets, suite_card

    try:
        suite = get_suite(args.suite, args.videos_per_split)
        references = reference_sets(suite, Path(args.bench_dir) / "data", log=print)
    except ConfigError as err:
        raise CliError(str(err)) from None
    return suite, references, suite_card(suite, references)


def _bench_export(args: argparse.Namespace) -> int:
    from phyray.benchmark.suites import export_suite

    suite, references, _ = _bench_suite(args)
    card = export_suite(suite, references, args.out)
    print(f"{args.out}: suite {suite.key}, {len(card['videos'])} videos; {card['task']}")
    for split, directory in references.items():
        print(f"  reference {split}: {directory}")
    return 0


def _bench_score(args: argparse.Namespace) -> int:
    from pathlib import Path

    from phyray.benchmark.baselines import baseline_source
    from phyray.benchmark.media import MediaError
    from phyray.benchmark.score import Scoring, Submission, score_suite, submission_source
    from phyray.eval.fvd import default_weights

    if (args.videos is None) == (args.baseline is None):
        raise CliError("give --videos DIR (a submission) or --baseline KIND (a reference entry)")
    for name, path in (("--lpips-backbone", args.lpips_backbone), ("--fvd-weights", args.fvd_weights)):
        if path is not None and not Path(path).is_file():
            raise CliError(f"{name}: {path} does not exist")
    suite, references, card = _bench_suite(args)
    bitrates_of = None
    try:
        if args.videos is not None:
            submission = Submission(Path(args.videos), {v["video_id"] for v in card["videos"]})
            for name, note in submission.notes:
                print(f"{name}: {note}")
            source, entry, bitrates_of = submission_source(submission, suite), args.name or Path(args.videos).name, lambda: submission.bitrates
        else:
            source, entry = baseline_source(suite, args.baseline), args.name or f"baseline: {args.baseline}"
        scoring = Scoring(ssim=args.ssim, lpips_backbone=args.lpips_backbone, cond_psnr_min=args.cond_psnr_min,
                          fvd_weights=None if args.no_fvd or suite.scenario != "combinatorial" else args.fvd_weights or default_weights())
        summary = score_suite(
            suite, card, references, source, args.out, entry, scoring, tuple(args.bitrates),
            cache_dir=Path(args.bench_dir) / "scores", allow_partial=args.allow_partial, bitrates_of=bitrates_of,
        )
        if args.mlflow is not None:
            from phyray.benchmark.score import log_to_mlflow
            from phyray.tracking import artifact_root_for, resolve_tracking_uri

            uri = resolve_tracking_uri(args.mlflow or None, args.bench_dir)
            run_id = log_to_mlflow(summary, Path(args.out), uri, artifact_root_for(uri, args.bench_dir))
            print(f"mlflow: run {run_id} in experiment phyray-bench of {uri}")
    except (ConfigError, MediaError, ProductError) as err:
        raise CliError(str(err)) from None
    counts = summary["counts"]
    print(f"{counts['scored']} of {counts['suite']} videos scored"
          + "".join(f", {v} {k}" for k, v in counts.items() if k not in ("scored", "suite") and v))
    print((Path(args.out) / "results.md").read_text())
    if not summary["reported"]:
        print(f"phyray: error: incomplete submission: no score reported (per video: {Path(args.out) / 'videos.csv'}; "
              "--allow-partial scores the rest)", file=sys.stderr)
        return 1
    return 0


def _bench_leaderboard(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from phyray.artifacts import atomic_write_bytes
    from phyray.benchmark.score import leaderboard_markdown

    summaries = []
    for report in args.reports:
        path = Path(report) / "summary.json"
        if not path.is_file():
            raise CliError(f"{report}: no summary.json; score an entry into it with `phyray bench score`")
        summaries.append(json.loads(path.read_text()))
    try:
        text = leaderboard_markdown(summaries, args.metric)
    except ValueError as err:
        raise CliError(str(err)) from None
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(Path(args.out), text.encode())
    print(text, end="")
    return 0


def _add_bench_commands(groups) -> None:
    from phyray.benchmark.score import COND_PSNR_MIN, FLOOR_BITRATES
    from phyray.benchmark.suites import SUITE_NAMES

    bench = _commands(groups.add_parser("bench", help="score any video model's continuations on phyray's physics suites"))

    def suite_args(command) -> None:
        command.add_argument("--suite", required=True, help=f"suite name: {', '.join(SUITE_NAMES)}")
        command.add_argument("--videos-per-split", type=positive_int, default=None,
                             help="shrink each split to about N videos (its own suite key; default: the full suite)")
        command.add_argument("--bench-dir", default=DEFAULT_BENCH_DIR,
                             help=f"where reference sets and kept floors live (default {DEFAULT_BENCH_DIR})")

    export = bench.add_parser("export", help="write a suite's conditioning frames (PNG, MP4) and suite.json")
    suite_args(export)
    export.add_argument("--out", required=True, help="directory to write the suite into")
    export.set_defaults(handler=_bench_export)
    score = bench.add_parser("score", help="score a directory of videos (or a baseline) against a suite")
    suite_args(score)
    score.add_argument("--videos", help="submission: per video id an .mp4, a PNG directory, .npy/.npz, or phyray datasets")
    score.add_argument("--baseline", help="score a reference entry instead: ground_truth, frozen, constant_velocity")
    score.add_argument("--out", required=True, help="report directory (videos.csv, summary.json, results.md)")
    score.add_argument("--name", help="the entry's name in results.md (default: the --videos directory's name)")
    score.add_argument("--allow-partial", action="store_true", help="report scores even if some videos are not scorable")
    score.add_argument("--bitrates", type=lambda text: [int(float(b)) for b in text.split(",")], default=list(FLOOR_BITRATES),
                       help="compression-floor bitrates in bits/s, comma-separated (default "
                            f"{','.join(str(b) for b in FLOOR_BITRATES)}; an MP4 submission's own is added)")
    score.add_argument("--cond-psnr-min", type=float, default=COND_PSNR_MIN,
                       help=f"conditioning frames must match the suite's to this PSNR in dB (default {COND_PSNR_MIN:g})")
    pixels = score.add_mutually_exclusive_group()
    pixels.add_argument("--ssim", action="store_true", default=None,
                        help="compute SSIM (default: on for combinatorial, off for the ball suites)")
    pixels.add_argument("--no-ssim", dest="ssim", action="store_false", default=None, help="skip SSIM")
    score.add_argument("--lpips-backbone", help="combinatorial: local torchvision AlexNet state dict for LPIPS")
    score.add_argument("--fvd-weights", help="combinatorial: I3D checkpoint (default: .weights/i3d-kinetics-400.ckpt if fetched)")
    score.add_argument("--no-fvd", action="store_true", help="combinatorial: skip FVD")
    score.add_argument("--mlflow", nargs="?", const="", default=None, metavar="URI",
                       help="also log the entry as an MLflow run (URI default: $MLFLOW_TRACKING_URI, else "
                            "a SQLite store in --bench-dir)")
    score.set_defaults(handler=_bench_score)
    board = bench.add_parser("leaderboard", help="entries of one suite side by side, beside the floors")
    board.add_argument("reports", nargs="+", help="report directories written by `phyray bench score`")
    board.add_argument("--out", required=True, help="markdown file to write")
    board.add_argument("--metric", help="the metric to rank (default: the suite's headline)")
    board.set_defaults(handler=_bench_leaderboard)


# ---- study -----------------------------------------------------------------------------------


def _study_report(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from phyray.study.report import publish_report, study_runs

    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri is None:
        # A study's default store: runs/studies/<name>/mlflow.db for experiment phyray-study-<name>.
        name = args.experiment.removeprefix("phyray-study-")
        default = Path("runs/studies") / name / "mlflow.db"
        if not default.is_file():
            raise CliError(f"--tracking-uri: not given, MLFLOW_TRACKING_URI unset, and no {default}")
        uri = f"sqlite:///{default.resolve()}"
    try:
        if args.list:
            for run in study_runs(uri, args.experiment):
                print(" ".join(run.values()))
            return 0
        # The default place is the study's own report, republished onto its parent run; a copy
        # written elsewhere (perhaps with another --metric) leaves the run's report as it is.
        out = Path(args.out or Path("runs/reports") / args.experiment)
        report = publish_report(uri, args.experiment, out, args.metric, args.run_id, log_to_run=args.out is None)
    except ConfigError as err:
        raise CliError(str(err)) from None
    if not report["records"]:
        raise CliError(f"--experiment: study run {report['parent_run_id']} of {args.experiment!r} has no finished trials in {uri}")
    print(report["summary"].read_text())
    run = report["parent_run_id"]
    where = f"logged to parent run {run}" if args.out is None else f"parent run {run} left as it was"
    print(f"report of study {report['study']} (study id {report['study_id']}): {out} ({where}; `--list` shows the others)")
    return 0


def _add_study_commands(groups) -> None:
    commands = _commands(groups.add_parser("study", help="scaling studies (run them with studies/scaling_law.py)"))
    report = commands.add_parser("report", help="rebuild a study's curves and tables from MLflow alone")
    report.add_argument("--experiment", required=True, help="the study's MLflow experiment (phyray-study-<name>)")
    report.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI, else runs/studies/<name>/mlflow.db)")
    report.add_argument("--out", help="write the files here only, leaving the parent run's logged report as it is "
                                      "(default: runs/reports/<experiment>, also logged onto the parent run)")
    report.add_argument("--metric", choices=["vel_err_mean_velocity", "vel_err_per_frame"],
                        help="headline velocity error (default: the study's eval.headline_metric)")
    report.add_argument("--run-id", help="the study run (one per study config) to report (default: the newest)")
    report.add_argument("--list", action="store_true", help="list the experiment's study runs, newest first, and stop")
    report.set_defaults(handler=_study_report)


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------


class OneLineParser(argparse.ArgumentParser):
    """Bad arguments get one line naming the argument (not the usage block), exit status 2."""

    def error(self, message: str):
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def _commands(parser: argparse.ArgumentParser):
    """The subcommands of `parser`. Not `required`: called without one, `main` prints this
    parser's help instead of argparse's "the following arguments are required"."""
    parser.set_defaults(usage=parser)
    return parser.add_subparsers(metavar="COMMAND")


def package_version() -> str:
    """The installed distribution's version, else the source tree's `phyray.__version__`."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("phyray")
    except PackageNotFoundError:
        from phyray import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="phyray", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    groups = _commands(parser)
    _add_data_commands(groups)
    _add_model_commands(groups)
    _add_eval_commands(groups)
    _add_train_commands(groups)
    _add_study_commands(groups)
    _add_bench_commands(groups)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # --help, --version, or a bad argument already reported in one line
        return int(stop.code or 0)
    if not hasattr(args, "handler"):  # `phyray` or `phyray data` alone: what there is to run
        args.usage.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except CliError as err:
        print(f"phyray: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
