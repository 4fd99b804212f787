"""The combinatorial study: its config checks, its grid, and configs/studies/combinatorial-smoke.yaml
end to end on real Ray, PHYRE, DeepSpeed and MLflow (shrunk), down to Table 2 rebuilt from MLflow."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import rebuilt_report, trial_runs
from mlflow.tracking import MlflowClient

from phyray.config import ConfigError
from phyray.study.plan import Trial, cost_plan, expand_grid
from phyray.study.settings import load_study_config

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "studies" / "combinatorial-smoke.yaml"
BALL_SMOKE = REPO / "configs" / "studies" / "smoke.yaml"
TINY = ["vae.train.steps=4", "vae.train.log_every=2", "vae.train.checkpoint_every=4", "dit.steps=4", "dit.log_every=2",
        "dit.checkpoint_every=4", "eval.sample_steps=2", "data_sizes=['8']", "data.phyre.template_seeds=2"]


@pytest.mark.parametrize(
    "override, message",
    [
        ("templates=['10003', '10061']", "templates: '10061' includes held-out templates [10061]"),
        ("templates=['10003', 'seven']", "templates: bad template 'seven' in 'seven'"),
        ("templates=['10003', '99']", "templates: template 99 in '99' is outside 10000-10069"),
        ("templates=['10003', '10003']", "templates: listed twice: 10003"),
        ("templates=[]", "templates: a combinatorial study needs its template sets"),
        ("data_sizes=['3M']", "data_sizes: '3M' is a ball-scenario preset"),
        ("data_sizes=['6']", "data_sizes: 6 videos per template is not 4 seeds"),
        ("data.eval_id=5", "data.eval_id: 5 in-template videos per template need as many seeds"),
        ("data.resolution=96", "data.resolution: 96 does not divide PHYRE's 256²"),
        ("eval.lpips_backbone=/no/alexnet.pth", "eval.lpips_backbone: /no/alexnet.pth does not exist"),
        ("eval.fvd_weights=/no/i3d.ckpt", "eval.fvd_weights: /no/i3d.ckpt does not exist"),
        ("data.phyre.num_frames=40", "data.phyre.num_frames: Input should be less than or equal to 32"),
        ("scenarios=['combinatorial', 'parabola']", "scenarios: combinatorial runs alone"),
    ],
)
def test_bad_combinatorial_configs_fail_at_load_naming_the_field(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_study_config(SMOKE, [override])


def test_templates_belong_to_combinatorial_studies_only():
    with pytest.raises(ConfigError, match="templates: only a combinatorial study has a template axis"):
        load_study_config(BALL_SMOKE, ["templates=['6']"])


def test_the_grid_has_a_template_axis_and_ball_trials_keep_their_identity():
    cfg = load_study_config(SMOKE, ["models=['DiT-T', 'DiT-W']", "seeds=[0, 1]"])
    trials = expand_grid(cfg)
    assert [t.key for t in trials[:4]] == [
        "combinatorial-DiT-T-10003t-16-s0", "combinatorial-DiT-T-10003t-16-s1",
        "combinatorial-DiT-T-10003_10005t-16-s0", "combinatorial-DiT-T-10003_10005t-16-s1",
    ]
    assert trials[2].as_dict()["templates"] == "10003,10005"
    # A ball trial's record has no templates entry, so its identity (and cached runs) are as before.
    assert Trial("uniform_motion", "DiT-T", "300").as_dict() == {
        "scenario": "uniform_motion", "model": "DiT-T", "data_size": "300", "seed": 0,
    }
    plan = cost_plan(cfg)
    assert [r["videos"] for r in plan["trials"][:4:2]] == [16, 32]  # 16 videos per template
    paper = load_study_config(REPO / "configs" / "studies" / "combinatorial-paper.yaml")
    keys = [t.key for t in expand_grid(paper)]
    assert keys == ["combinatorial-DiT-B-60t-99K-s0", "combinatorial-DiT-XL-6t-99K-s0",
                    "combinatorial-DiT-XL-30t-99K-s0", "combinatorial-DiT-XL-60t-99K-s0"]


def test_evaluation_keys_give_back_their_split_and_template_set():
    from phyray.study.combinatorial import IN_TEMPLATE, OUT_OF_TEMPLATE, eval_key, key_parts

    assert key_parts(eval_key(IN_TEMPLATE, "10003,10005")) == (IN_TEMPLATE, "10003,10005")
    assert key_parts(eval_key(OUT_OF_TEMPLATE, "6")) == (OUT_OF_TEMPLATE, None)  # one set for every cell
    assert key_parts("eval_id") == ("eval_id", None)


def test_a_combinatorial_study_without_phyre_stops_before_any_data(tmp_path, monkeypatch):
    from phyray.study.grid import run_study

    monkeypatch.setenv("PHYRAY_PHYRE_PYTHON", str(tmp_path / "no-python"))
    cfg = load_study_config(SMOKE, [f"output_dir={tmp_path / 'studies'}", f"data_dir={tmp_path / 'data'}"])
    with pytest.raises(ConfigError, match="scenarios: combinatorial needs PHYRE"):
        run_study(cfg)
    assert not (tmp_path / "data").exists() and not (tmp_path / "studies").exists()


@pytest.fixture(scope="module")
def combinatorial_study(ray_local, tmp_path_factory):
    from phyray.study.grid import run_study

    root = tmp_path_factory.mktemp("combinatorial")
    cfg = load_study_config(SMOKE, [*TINY, f"output_dir={root / 'studies'}", f"data_dir={root / 'data'}"])
    return cfg, run_study(cfg)


@pytest.mark.slow
@pytest.mark.usefixtures("phyre_env")
def test_smoke_study_trains_each_template_cell_and_logs_table2(combinatorial_study, tmp_path):
    cfg, result = combinatorial_study
    assert not result.failed
    client = MlflowClient(result.tracking_uri)
    trials = trial_runs(client, cfg.experiment_name)
    assert sorted(r.data.tags["phyray.templates"] for r in trials) == ["10003", "10003,10005"]
    for run in trials:
        metrics = run.data.metrics
        for group in ("in_template", "out_of_template"):
            for name in ("psnr", "ssim", "abnormal", "vae_floor_psnr", "vae_floor_abnormal", "gt_floor_abnormal",
                         "frozen_psnr", "frozen_ssim", "psnr_over_frozen"):
                assert f"eval/{group}/{name}" in metrics, (group, name)
            # A mean of per-video differences is the difference of the means.
            assert metrics[f"eval/{group}/psnr_over_frozen"] == pytest.approx(
                metrics[f"eval/{group}/psnr"] - metrics[f"eval/{group}/frozen_psnr"])
            assert 0 <= metrics[f"eval/{group}/abnormal"] <= 1
            assert metrics[f"eval/{group}/psnr_ci_low"] <= metrics[f"eval/{group}/psnr"] <= metrics[f"eval/{group}/psnr_ci_high"]
        assert int(run.data.params["trial.num_videos"]) == 8 * len(run.data.tags["phyray.templates"].split(","))
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "rollouts")}
        assert "rollouts/eval_out_of_template_worst.gif" in artifacts
    experiment = client.get_experiment_by_name(cfg.experiment_name).experiment_id
    vae = client.search_runs([experiment], "tags.`phyray.role` = 'vae'")[0]
    assert {"vae_floor/in_template_10003t/psnr", "vae_floor/out_of_template/psnr"} <= vae.data.metrics.keys()

    table = result.report["summary"].read_text()
    assert "| DiT-T | 1 (8) |" in table and "| DiT-T | 2 (16) |" in table
    assert "Out-of-template better with more templates" in table and "at 32² read its rates beside" in table
    assert "Nothing moving: each video's conditioning frame held" in table
    parent_artifacts = {a.path for a in client.list_artifacts(result.parent_run_id)}
    assert {"table2.md", "table2.csv", "template_scaling.png", "gifs"} <= parent_artifacts

    out = rebuilt_report(cfg, result, tmp_path / "rebuilt")
    assert (out / "table2.md").read_text() == table
    assert len(list((out / "gifs").glob("*_out_of_template_*.gif"))) == 4


@pytest.mark.slow
@pytest.mark.usefixtures("phyre_env")
def test_cli_scores_a_cells_rollouts_as_the_study_did(combinatorial_study, tmp_path, capsys):
    import json

    from phyray.cli import main

    cfg, result = combinatorial_study
    client = MlflowClient(result.tracking_uri)
    experiment = client.get_experiment_by_name(cfg.experiment_name).experiment_id
    run = client.search_runs([experiment], "tags.`phyray.templates` = '10003'")[0]
    trial_dir = Path(run.data.params["output_dir"]) / run.data.params["name"]
    rollouts = next((trial_dir / "rollouts").glob("eval_out_of_template-*"))
    reference = next((Path(cfg.data_dir) / "combinatorial").glob("eval_out_of_template-1-32-*"))
    code = main(["eval", "video", "--rollouts", str(rollouts), "--reference", str(reference),
                 "--out", str(tmp_path / "report.json"), "--no-fvd"])
    assert code == 0, capsys.readouterr().err
    rows = json.loads((tmp_path / "report.json").read_text())
    for metric in ("psnr", "frozen_psnr", "psnr_over_frozen"):
        row = next(r for r in rows if r["metric"] == metric and r["template"] == "all")
        assert row["value"] == pytest.approx(run.data.metrics[f"eval/out_of_template/{metric}"]), metric
    assert (tmp_path / "videos.csv").is_file()


@pytest.mark.slow
@pytest.mark.usefixtures("phyre_env")
def test_a_dev_split_makes_only_its_own_evaluation_sets(combinatorial_study):
    from phyray.data import iter_rows
    from phyray.study.combinatorial import (
        IN_TEMPLATE,
        OUT_OF_TEMPLATE,
        generate_combinatorial_inputs,
    )

    cfg, _ = combinatorial_study
    dev_cfg = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"split": "dev"})})
    test = generate_combinatorial_inputs(cfg, log=lambda *_: None)
    made = {p: p.stat().st_mtime_ns for d in test.train.values() for p in Path(d).iterdir()}
    dev = generate_combinatorial_inputs(dev_cfg, log=lambda *_: None)
    assert dev.train == test.train  # the training sets found by identity, untouched
    assert {p: p.stat().st_mtime_ns for d in dev.train.values() for p in Path(d).iterdir()} == made
    for key in dev.eval:
        assert dev.eval[key] != test.eval[key]
        want = ("dev_in_template", 995) if key.startswith(IN_TEMPLATE) else ("dev_out_of_template", 500)
        assert key.startswith((IN_TEMPLATE, OUT_OF_TEMPLATE))
        assert {(row["split"], row["trial"]) for row in iter_rows(dev.eval[key], ["split", "trial"])} == {want}


def test_a_gain_over_nothing_moving_combines_over_seeds_with_its_sign():
    from phyray.study.report import grid_cells
    from phyray.study.table2 import table2_markdown

    def seed(seed: int, gain: tuple) -> dict:
        name = "eval/out_of_template/psnr_over_frozen"
        return {"trial": f"s{seed}", "scenario": "combinatorial", "model": "DiT-M", "data_size": "50", "seed": seed,
                "templates": "60", "num_videos": 3000, "run_id": str(seed), "eval/out_of_template/frozen_psnr": 22.6,
                name: gain[0], f"{name}_ci_low": gain[1], f"{name}_ci_high": gain[2]}

    (cell,) = grid_cells([seed(0, (-1.0, -1.5, -0.5)), seed(1, (-0.8, -1.2, -0.4))])
    gain = cell.get("eval/out_of_template/psnr_over_frozen")
    # Two seeds: the t interval is wide (t = 12.7), but its low end stays below the mean, not cut at 0.
    assert gain.value == pytest.approx(-0.9) and gain.low == pytest.approx(-2.249, abs=1e-3) and gain.high > 0
    table = table2_markdown([cell], {"name": "t", "run_id": "r", "id": "i"}, [], {"data.resolution": "64"}, {})
    assert "| DiT-M | 60 | – | -0.90 [-2.25, +0.45] | – / undecided |" in table


def test_table2_protocol_names_the_split_and_its_trials():
    from phyray.study.table2 import protocol_line

    test = protocol_line({"data.resolution": "64"}, {})
    dev = protocol_line({"data.resolution": "64", "eval.split": "dev", "eval.sample_steps": "10", "eval.precision": "bf16"}, {})
    assert "test split" in test and "in-template: trial 990 " in test and "out-of-template: trial 0 " in test
    assert "; 10 sampling steps in bf16; " in dev and " in bf16" not in test
    assert "dev split" in dev and "in-template: trial 995 " in dev and "out-of-template: trial 500 " in dev
    # A study whose `dit` leaves cond_frames unset trains on TrainConfig's default; the protocol says that count.
    from phyray.study.settings import dit_settings

    study = load_study_config(SMOKE)
    unset = study.model_copy(update={"dit": {k: v for k, v in study.dit.items() if k != "diffusion"}})
    assert f", {dit_settings(unset).diffusion.cond_frames} conditioning frame(s);" in test


def test_table2_checks_state_the_papers_claims_at_the_intervals():
    from phyray.study.table2 import table2_markdown, template_checks

    def record(templates: str, videos: int, out_fvd: tuple, in_psnr: tuple, out_psnr: tuple, out_gain: tuple) -> dict:
        metrics = {}
        for name, (value, low, high) in (("out_of_template/fvd", out_fvd), ("in_template/psnr", in_psnr),
                                         ("out_of_template/psnr", out_psnr), ("out_of_template/frozen_psnr", (24.0,) * 3),
                                         ("out_of_template/psnr_over_frozen", out_gain)):
            metrics |= {f"eval/{name}": value, f"eval/{name}_ci_low": low, f"eval/{name}_ci_high": high}
        return {"trial": templates, "scenario": "combinatorial", "model": "DiT-XL", "data_size": "99K", "seed": 0,
                "templates": templates, "num_videos": videos, "run_id": templates, **metrics}

    # The paper's direction: out-of-template FVD falls 22 -> 19 beyond the intervals, PSNR rises
    # only within them; in-template PSNR is best at 6 templates (33 vs 32, separated).
    records = [record("6", 594_000, (22.1, 21.5, 22.7), (33.0, 32.8, 33.2), (25.5, 24.0, 27.0), (1.5, -0.2, 3.1)),
               record("60", 5_940_000, (18.7, 18.2, 19.2), (32.0, 31.8, 32.2), (27.3, 26.5, 28.0), (3.3, 2.4, 4.1))]
    from phyray.study.report import grid_cells

    checks = {c["metric"]: c for c in template_checks(grid_cells(records))}
    assert checks["fvd"]["out_of_template_improves"] == "yes"
    assert checks["psnr"]["out_of_template_improves"] == "undecided"
    assert checks["psnr"]["fewest_best_in_template"] == "yes"
    assert checks["fvd"]["fewest_best_in_template"] == "–"  # no in-template FVD logged
    table = table2_markdown(grid_cells(records), {"name": "t", "run_id": "r", "id": "i"}, [], {"data.resolution": "64"}, {})
    assert "| DiT-XL | 6 (594,000) | – / 22.1 | – / – | 33.0 / 25.5 | – / – | – / – |" in table
    assert "meets its calibration targets at 256² only" in table and "at 64² read its rates" in table
    # Nothing moving: one row per template set, and each cell's paired gain read at its interval.
    assert "| #Templates | PSNR ↑ |" in table and "| 6 | – / 24.0 |" in table  # only what was scored
    assert "| DiT-XL | 6 | – | +1.50 [-0.20, +3.10] | – / undecided |" in table
    assert "| DiT-XL | 60 | – | +3.30 [+2.40, +4.10] | – / yes |" in table
    # On the dev split the checks say they choose settings; the test split's are the verdict.
    assert "**Dev split**" not in table
    dev = table2_markdown(grid_cells(records), {"name": "t", "run_id": "r", "id": "i"}, [],
                          {"data.resolution": "64", "eval.split": "dev"}, {})
    assert dev.index("The paper's claims") < dev.index("**Dev split**: these checks are for choosing settings") < dev.index("| Model | Metric |")
