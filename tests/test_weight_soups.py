"""Weight-space soups (uniform, greedy) and leave-one-run-out folds in recipes."""

import json
from dataclasses import replace

import pytest
import torch
import yaml
from click.testing import CliRunner

from copick_soup.cli import main
from copick_soup.errors import SoupError
from copick_soup.model import create_model
from copick_soup.model.average import average_state, weight_soup
from copick_soup.model.checkpoint import load_member, save_member
from copick_soup.model.manifest import MemberManifest
from copick_soup.objects import ParticleClass

MANIFEST = MemberManifest(name="m", variant="unet3d_test", unet={}, classes=[ParticleClass("a", 1, 60.0)],
                          voxel_size=10.012, tomo_type="denoised")


def members(tmp_path, n=3):
    paths = []
    for i in range(n):
        torch.manual_seed(i)
        paths.append(save_member(tmp_path / f"m{i}", create_model("unet3d_test", n_classes=1), MANIFEST))
    return paths


def test_uniform_soup_is_the_parameter_mean(tmp_path):
    paths = members(tmp_path)
    soup = weight_soup(paths, tmp_path / "soup", "uniform", echo=lambda m: None)
    merged, manifest = load_member(soup)
    originals = [load_member(p)[0] for p in paths]
    key = "head.weight"
    expected = sum(m.state_dict()[key] for m in originals) / 3
    assert torch.allclose(merged.state_dict()[key], expected)
    assert manifest.training["weight_soup"] == "uniform" and len(manifest.training["ingredients"]) == 3


def test_greedy_soup_keeps_only_ingredients_that_do_not_hurt(tmp_path):
    paths = members(tmp_path)
    target = load_member(paths[0])[0].state_dict()["head.bias"]

    def score(model):  # closer to member 0's head bias is better
        return -float((model.state_dict()["head.bias"] - target).abs().sum())

    soup = weight_soup(paths, tmp_path / "greedy", "greedy", score=score, echo=lambda m: None)
    manifest = json.loads(soup.read_text())
    assert manifest["training"]["ingredients"] == [str(paths[0])]


def test_average_state_rejects_nothing_but_mixed_architectures_are_refused(tmp_path):
    paths = members(tmp_path, 1)
    other = save_member(tmp_path / "other", create_model("unet3d_test", n_classes=2),
                        replace(MANIFEST, classes=[ParticleClass("a", 1, 60.0), ParticleClass("b", 2, 60.0)]))
    with pytest.raises(SoupError, match="different architecture or classes"):
        weight_soup([paths[0], other], tmp_path / "x", "uniform")
    assert set(average_state([create_model("unet3d_test")])) == set(create_model("unet3d_test").state_dict())


def test_recipe_with_leave_one_run_out_folds(tmp_path):
    recipe = dict(
        name="folds", variants=["unet3d_test"], tomo_types=["denoised"],
        train=dict(patch=16, batch_size=1, steps=2, val_every=2, val_window=32),
        finetune=dict(simulate=dict(runs=3, shape=[32, 96, 96], profile="experimental", seed=8, crowding=10.0),
                      folds="leave-one-run-out"),
    )
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = CliRunner().invoke(main, ["train", "--recipe", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    for k in range(3):
        assert (tmp_path / "out" / "stages" / "unet3d_test-denoised" / f"finetune-fold{k}" / "best.json").exists()
    _, manifest = load_member(tmp_path / "out" / "unet3d_test-denoised.json")
    assert manifest.training["weight_soup"] == "uniform"
    assert len(manifest.training["ingredients"]) == 3
    folds = [t["val_runs"] for t in manifest.training["ingredient_training"]]
    assert sorted(f[0] for f in folds) == ["exp_000", "exp_001", "exp_002"]
