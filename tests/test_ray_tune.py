"""Trial fan-out on a real local Ray cluster: members x settings x folds, then the soup search."""

import json
import subprocess
import sys

import pytest

pytest.importorskip("ray")

from copick_soup.simulate import simulate_project  # noqa: E402

TRAIN = dict(variant="unet3d_test", patch=16, steps=2, val_every=2, val_threshold=0.0, batch_size=1)


def recipe(tmp_path):
    return dict(name="tiny-tune", variants=["unet3d_test"], tomo_types=["denoised", "wbp"], train=TRAIN,
                pretrain=dict(simulate=dict(runs=2, shape=[32, 64, 64], crowding=10.0, seed=41), val_runs=1),
                finetune=dict(simulate=dict(runs=2, shape=[48, 96, 96], crowding=10.0, seed=42,
                                            profile="experimental"), folds="leave-one-run-out"))


@pytest.mark.slow
def test_tune_fans_out_members_settings_and_folds_then_writes_a_soup(tmp_path, ray_cluster):
    from ray_jobs.tune import parse_grid, tune

    val = simulate_project(tmp_path / "val", runs=1, shape=(32, 64, 64), crowding=10.0, seed=43)
    grid = parse_grid(["lr=0.001,0.0005"])
    assert grid == [{"lr": 0.001}, {"lr": 0.0005}]
    messages = []
    result = tune(recipe(tmp_path), tmp_path / "out", grid, val, ["exp_000"], step=0.5,
                  resources=dict(num_cpus=1, num_gpus=0), timeout=300, echo=messages.append)
    assert "pretrain: 4 trial(s) on the cluster" in messages and "finetune: 8 trial(s) on the cluster" in messages
    for setting in ("lr0.001", "lr0.0005"):  # every setting trained every fold of both members
        for member in ("unet3d_test-denoised", "unet3d_test-wbp"):
            stages = tmp_path / "out" / "trials" / setting / "stages" / member
            assert {p.name for p in stages.iterdir()} >= {"pretrain", "finetune-fold0", "finetune-fold1",
                                                          "finetune-uniform.json"}
    assert set(result["members"]) == {"unet3d_test-denoised", "unet3d_test-wbp"}
    assert set(result["settings"].values()) <= {"lr0.001", "lr0.0005"}
    soup = json.loads(open(result["soup"]).read())
    assert len(soup["members"]) == 2 and soup["validation"]["runs"] == ["exp_000"]
    member = json.loads(open(result["members"]["unet3d_test-wbp"]).read())
    assert member["training"]["weight_soup"] == "uniform" and len(member["training"]["ingredients"]) == 2


def test_tune_refuses_to_search_a_soup_on_runs_the_folds_trained_on(tmp_path, ray_cluster):
    from copick_soup.errors import SoupError
    from ray_jobs.tune import tune

    small = recipe(tmp_path)
    small.pop("pretrain")
    messages = []
    with pytest.raises(SoupError, match="name the soup's validation runs"):
        tune(small, tmp_path / "out", resources=dict(num_cpus=1, num_gpus=0), timeout=300, echo=messages.append)
    assert not any("trial(s) on the cluster" in m for m in messages)  # refused before any training


def test_tune_reports_bad_input_in_one_line_before_ray_starts(tmp_path, capsys, monkeypatch):
    from ray_jobs import tune

    def no_ray(*args, **kwargs):  # a check that stopped refusing fails here instead of starting a tune in-process
        raise AssertionError("ray.init called: bad input reached Ray")

    monkeypatch.setattr(tune.ray, "init", no_ray)
    done = subprocess.run([sys.executable, "-m", "ray_jobs.tune", "--recipe", str(tmp_path / "nope.yaml"), "--out",
                           str(tmp_path / "o")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stderr.strip() == f"Error: {tmp_path / 'nope.yaml'}: no such recipe"
    # the rest in this process (each subprocess costs seconds of imports): main's return value is the exit status
    assert tune.main(["--recipe", "configs/recipes/cpu-demo.yaml", "--out", str(tmp_path / "o"), "--grid", "lr"]) == 1
    assert "--grid: expected key=value" in capsys.readouterr().err
    for option, error in ((["--step", "0.3"], "Error: --step 0.3: must divide 1 (e.g. 0.5, 0.25, 0.1)"),
                          (["--tta", "9"], "Error: --tta: choose 1 to 8 views, got 9"),
                          (["--grid", "patch=48,50"], "Error: --set: 'patch' 50: unet3d_tiny needs a multiple of 4; "
                                                      "try 48 or 52")):
        assert tune.main(["--recipe", "configs/recipes/cpu-demo.yaml", "--out", str(tmp_path / "o"), *option]) == 1
        assert capsys.readouterr().err.strip() == error
    assert not (tmp_path / "o").exists()
