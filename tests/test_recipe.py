"""Recipes end to end (pretrain -> fine-tune -> members) and fine-tuning on a lab's own classes."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from copick_soup.cli import main
from copick_soup.model.checkpoint import load_member

RECIPE = dict(
    name="test-recipe",
    variants=["unet3d_test"],
    tomo_types=["denoised", "wbp"],
    train=dict(patch=16, batch_size=1, steps=4, val_every=4, val_window=32),
    pretrain=dict(simulate=dict(runs=2, shape=[32, 96, 96], profile="simulated", seed=5, crowding=10.0), val_runs=1),
    finetune=dict(simulate=dict(runs=2, shape=[32, 96, 96], profile="experimental", seed=6, crowding=10.0),
                  val_runs=1, train=dict(steps=2, val_every=2)),
)


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("recipe")
    recipe = tmp / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    result = invoke("train", "--recipe", recipe, "--out", tmp / "out")
    assert result.exit_code == 0, result.output
    return tmp / "out", result.output


def test_recipe_makes_one_member_per_variant_and_tomo_type(trained):
    out, output = trained
    for tomo_type in ("denoised", "wbp"):
        model, manifest = load_member(out / f"unet3d_test-{tomo_type}.json")
        assert manifest.tomo_type == tomo_type and manifest.variant == "unet3d_test"
        training = manifest.training
        assert training["stage"] == "finetune" and training["recipe"] == "test-recipe"
        assert training["init"].endswith(f"stages/unet3d_test-{tomo_type}/pretrain/best.json")
        assert [s["stage"] for s in training["earlier_stages"]] == ["pretrain"]
        assert training["train_runs"] == ["exp_000"] and training["val_runs"] == ["exp_001"]
    assert f"member: {out / 'unet3d_test-wbp.json'}" in output
    assert (out / "data" / "pretrain" / "copick.json").exists()


def test_lab_fine_tunes_members_for_its_own_classes(trained, tmp_path):
    from copick_soup.simulate import simulate_project

    members, _ = trained
    objects = [dict(name="proteasome", is_particle=True, label=1, radius=100.0),
               dict(name="nucleosome", is_particle=True, label=2, radius=55.0,
                    metadata=dict(simulation=dict(per_tomogram=300)))]
    lab = simulate_project(tmp_path / "lab", runs=2, shape=(32, 96, 96), objects=objects, crowding=6.0)
    result = invoke("train", "-c", lab, "--init", members, "--train-runs", "exp_000", "--val-runs", "exp_001",
                    "--set", "steps=2", "--set", "val_every=2", "--out", tmp_path / "lab-members")
    assert result.exit_code == 0, result.output
    assert "class head re-initialised" in result.output
    model, manifest = load_member(tmp_path / "lab-members" / "unet3d_test-denoised.json")
    assert manifest.class_names == ["proteasome", "nucleosome"]
    assert model.config.n_classes == 2
    assert manifest.training["init"] == str(members / "unet3d_test-denoised.json")
    again = invoke("train", "-c", lab, "--init", members, "--train-runs", "exp_000", "--val-runs", "exp_001",
                   "--out", tmp_path / "lab-members")  # the same folder, without --resume
    assert again.exit_code != 0 and again.output.strip().splitlines()[-1] == (
        f"Error: {tmp_path / 'lab-members'} holds earlier training ({tmp_path / 'lab-members' / 'stages'}); pass "
        f"--resume to continue it, or choose another --out")
    assert load_member(tmp_path / "lab-members" / "unet3d_test-denoised.json")[1] == manifest  # left as it was


def test_fine_tuning_runs_that_lack_some_types_fine_tunes_the_members_that_can_run(trained, tmp_path):
    from copick_soup.simulate import simulate_project

    members, _ = trained  # unet3d_test members for denoised and wbp
    lab = simulate_project(tmp_path / "lab", runs=2, shape=(32, 96, 96), crowding=10.0, tomo_types=["denoised"])
    result = invoke("train", "-c", lab, "--init", members, "--train-runs", "exp_000", "--val-runs", "exp_001",
                    "--set", "steps=2", "--set", "val_every=2", "--out", tmp_path / "lab-members")
    assert result.exit_code == 0, result.output
    assert "unet3d_test-wbp: left out (no 'wbp' tomograms at 10.012 Å in the training runs)" in result.output
    assert sorted(p.name for p in (tmp_path / "lab-members").glob("*.json")) == ["unet3d_test-denoised.json"]
    soup = invoke("soup", "-c", lab, "--members", tmp_path / "lab-members", "--val-runs", "exp_001", "--window", 32,
                  "--out", tmp_path / "lab-soup")
    assert soup.exit_code == 0, soup.output
    assert [m["path"] for m in json.loads((tmp_path / "lab-soup" / "soup.json").read_text())["members"]] == [
        str(tmp_path / "lab-members" / "unet3d_test-denoised.json")]
    none = invoke("train", "-c", lab, "--init", members / "unet3d_test-wbp.json", "--train-runs", "exp_000",
                  "--val-runs", "exp_001", "--out", tmp_path / "nothing")
    assert none.exit_code == 1 and none.output.strip().splitlines()[-1] == (
        "Error: none of the members' tomogram types (wbp) is in the training runs; they have denoised")


def test_an_instance_norm_member_fine_tunes_into_a_fixed_norm_one(trained, tmp_path):
    """`--set norm=fixed`: the member's instance norms get statistics measured on the runs, then fine-tune."""
    import torch

    members, _ = trained
    data = members / "data" / "finetune" / "copick.json"
    result = invoke("train", "-c", data, "--init", members / "unet3d_test-denoised.json", "--train-runs", "exp_000",
                    "--val-runs", "exp_001", "--set", "norm=fixed", "--set", "steps=2", "--set", "val_every=2",
                    "--out", tmp_path / "fixed")
    assert result.exit_code == 0, result.output
    assert "instance norms fixed: statistics of 16 random 32³ windows of the training runs" in result.output
    model, manifest = load_member(tmp_path / "fixed" / "unet3d_test-denoised.json")
    assert model.config.norm == "fixed" and manifest.training["config"]["norm"] == "fixed"
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm3d)]
    assert norms and all(not torch.allclose(m.running_var, torch.ones_like(m.running_var)) for m in norms)
    again = invoke("train", "-c", data, "--init", tmp_path / "fixed" / "unet3d_test-denoised.json", "--train-runs",
                   "exp_000", "--val-runs", "exp_001", "--set", "steps=2", "--set", "val_every=2",
                   "--out", tmp_path / "again")  # a lab fine-tuning a fixed-norm member: its norms stay fixed
    assert again.exit_code == 0, again.output
    assert "instance norms fixed" not in again.output  # its statistics are kept, not measured anew
    refined, _ = load_member(tmp_path / "again" / "unet3d_test-denoised.json")
    kept = [m for m in refined.modules() if isinstance(m, torch.nn.BatchNorm3d)]
    assert refined.config.norm == "fixed" and all(torch.equal(a.running_var, b.running_var)
                                                  for a, b in zip(norms, kept, strict=True))


def test_a_fix_norms_stage_fine_tunes_each_member_with_fixed_norms_on_the_fine_tuning_runs(trained, tmp_path):
    """The recipe's third stage: `norm: fixed` from the fine-tuned member, on the fine-tuning stage's split."""
    import torch

    members, _ = trained
    finetune = dict(config=str(members / "data" / "finetune" / "copick.json"), val_runs=1,
                    train=dict(steps=2, val_every=2))
    recipe = dict(RECIPE, tomo_types=["denoised"], finetune=finetune, fix_norms=dict(train=dict(steps=2)))
    recipe.pop("pretrain")
    path = tmp_path / "fix.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = invoke("train", "--recipe", path, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "instance norms fixed: statistics of 16 random 32³ windows of the training runs" in result.output
    model, manifest = load_member(tmp_path / "out" / "unet3d_test-denoised.json")
    training = manifest.training
    assert training["stage"] == "fix_norms" and training["config"]["norm"] == model.config.norm == "fixed"
    assert training["config"]["steps"] == 2 and training["config"]["val_every"] == 4  # its own, then the recipe's
    assert training["init"].endswith("stages/unet3d_test-denoised/finetune/best.json")
    assert [s["stage"] for s in training["earlier_stages"]] == ["finetune"]
    assert training["train_runs"] == ["exp_000"] and training["val_runs"] == ["exp_001"]  # the fine-tuning split
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm3d)]
    assert norms and all(not torch.allclose(m.running_var, torch.ones_like(m.running_var)) for m in norms)
    alone = dict(RECIPE, fix_norms={})
    alone.pop("finetune")
    path.write_text(yaml.safe_dump(alone))
    result = invoke("train", "--recipe", path, "--out", tmp_path / "alone")
    assert result.exit_code != 0 and result.output.strip().splitlines()[-1] == (
        "Error: recipe stage 'fix_norms' needs 'config' or 'simulate'")
    assert not (tmp_path / "alone" / "stages").exists()  # refused before the pretraining


def test_a_run_cannot_both_train_and_validate_a_member(trained, tmp_path):
    from copick_soup.simulate import simulate_project

    members, _ = trained
    lab = simulate_project(tmp_path / "lab", runs=2, shape=(32, 64, 64))
    for runs, error in (
            (["--train-runs", "exp_000,exp_001", "--val-runs", "exp_001"],
             "Error: run(s) exp_001 are both training and validation runs"),
            (["--val-runs", "exp_000,exp_001"], "Error: every run is a validation run (exp_000, exp_001)")):
        result = invoke("train", "-c", lab, "--init", members, *runs, "--out", tmp_path / "o")
        assert result.exit_code != 0 and result.output.strip().splitlines()[-1].startswith(error)
        assert not list((tmp_path / "o").rglob("*.safetensors"))  # nothing trained


def test_bad_recipes_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(dict(RECIPE, pretrian={})))
    result = invoke("train", "--recipe", bad, "--out", tmp_path / "o")
    assert result.exit_code != 0 and "unknown recipe key(s) pretrian" in result.output
    bad.write_text(yaml.safe_dump(dict(RECIPE, finetune=dict(RECIPE["finetune"], by_variant=dict(unet3d_tinny={})))))
    result = invoke("train", "--recipe", bad, "--out", tmp_path / "o")
    assert result.exit_code != 0 and "unknown recipe key(s) finetune.by_variant.unet3d_tinny" in result.output
    result = invoke("train", "--recipe", tmp_path / "none.yaml", "--out", tmp_path / "o")
    assert result.exit_code != 0 and "none.yaml: no such recipe" in result.output
    result = invoke("train", "--out", tmp_path / "o", "--init", "default")
    assert result.exit_code != 0 and "give --recipe, or --config with --init" in result.output
    for edit, error in (
            (dict(tomo_types=["isonetcorrected", "wbp"]),
             "recipe stage 'pretrain' simulates its runs, and the simulator writes no isonetcorrected tomograms"),
            (dict(pretrain=dict(RECIPE["pretrain"], simulate=dict(RECIPE["pretrain"]["simulate"], crowding=-1))),
             "--crowding -1: must be >= 0"),
            (dict(train=dict(RECIPE["train"], patch=15)),
             "recipe train: 'patch' 15: unet3d_test needs a multiple of 2"),
            (dict(finetune=dict(RECIPE["finetune"], by_variant=dict(unet3d_test=dict(stepz=3)))),
             "recipe stage by_variant unet3d_test: unknown setting 'stepz'")):
        bad.write_text(yaml.safe_dump(dict(RECIPE, **edit)))
        result = invoke("train", "--recipe", bad, "--out", tmp_path / "refused")
        assert result.exit_code != 0 and result.output.strip().splitlines()[-1].startswith(f"Error: {error}")
        assert not (tmp_path / "refused" / "data").exists()  # refused before simulating anything


def test_shipped_recipes_parse():
    from copick_soup.train.config import TrainConfig, override
    from copick_soup.train.recipe import load_recipe

    for path in (Path(__file__).parent.parent / "configs" / "recipes").glob("*.yaml"):
        recipe = load_recipe(path)
        for stage in ("pretrain", "finetune", "fix_norms"):
            if recipe.get(stage):
                override(override(TrainConfig(), recipe["train"]), recipe[stage]["train"])
    assert json.dumps(load_recipe(path))


def test_each_variant_can_have_its_own_tomo_types():
    from copick_soup.train.recipe import recipe_members, recipe_tomo_types

    mapped = dict(variants=dict(unet3d_medium=["denoised"], unet3d_tiny=["denoised", "wbp"]))
    assert recipe_members(mapped) == [("unet3d_medium", "denoised"), ("unet3d_tiny", "denoised"),
                                      ("unet3d_tiny", "wbp")]
    assert recipe_tomo_types(mapped) == ["denoised", "wbp"]
    crossed = dict(variants=["unet3d_tiny", "unet3d_medium"], tomo_types=["wbp", "denoised"])
    assert recipe_members(crossed) == [("unet3d_tiny", "wbp"), ("unet3d_tiny", "denoised"),
                                       ("unet3d_medium", "wbp"), ("unet3d_medium", "denoised")]


def test_a_stage_can_set_one_variant_apart():
    from copick_soup.train.recipe import stage_config

    recipe = dict(train=dict(patch=48), finetune=dict(train=dict(steps=1000, lr=0.001),
                                                      by_variant=dict(unet3d_medium=dict(steps=2500))))
    medium, tiny = (stage_config(recipe, recipe["finetune"], v, {}) for v in ("unet3d_medium", "unet3d_tiny"))
    assert (medium.steps, tiny.steps) == (2500, 1000) and medium.lr == tiny.lr == 0.001 and medium.patch == 48
    assert stage_config(recipe, recipe["finetune"], "unet3d_medium", dict(steps=10)).steps == 10  # --set wins


def test_copick_discovers_the_training_plugin():
    copick = Path(sys.executable).parent / "copick"
    out = subprocess.run([copick, "training", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "soup-train" in out.stdout


def test_a_leave_one_engine_out_fold_is_the_recipe_with_other_engines(tmp_path):
    """`train --recipe R --engine blobs+sart` simulates every phantom stage with those engines and changes nothing
    else; a stage with its own project keeps it. Bad engines are refused before any work."""
    from copick_soup.train.recipe import load_recipe, with_engine

    default = load_recipe(Path(__file__).parent.parent / "configs" / "recipes" / "cpu-default.yaml")
    fold = with_engine(default, "blobs+sart")
    for stage in ("pretrain", "finetune"):
        assert fold[stage]["simulate"] == {**default[stage]["simulate"], "engine": "blobs+sart"}
        assert fold[stage]["train"] == default[stage]["train"]
    assert default["pretrain"]["simulate"]["engine"] == "mixed"  # the recipe itself is left as it was
    assert fold["fix_norms"] == default["fix_norms"] and fold["variants"] == default["variants"]
    given = dict(RECIPE, finetune=dict(config="lab.json", train=dict(steps=1)))
    assert with_engine(given, "sart")["finetune"] == given["finetune"]
    result = invoke("train", "--recipe", Path(__file__).parent.parent / "configs" / "recipes" / "cpu-default.yaml",
                    "--engine", "blobs+parakeet", "--out", tmp_path / "o")
    assert result.exit_code != 0 and "unknown or repeated engine in 'blobs+parakeet'" in result.output
    assert not (tmp_path / "o" / "data").exists()
    result = invoke("train", "--engine", "sart", "--out", tmp_path / "o", "-c", "x.json", "--init", "default")
    assert result.exit_code != 0 and "--engine chooses the simulator of a recipe's phantoms" in result.output
