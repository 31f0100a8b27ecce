"""`copick-soup finetune`: a lab's path in one command, its plan, its budget and its one-line errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from copick_soup.cli import main

TRAIN, VAL = ["--train-runs", "exp_000,exp_001"], ["--val-runs", "exp_002"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def lab_objects(**per_tomogram):
    """Some of the CZII objects, each with this many particles per full-size tomogram (dense: the runs are tiny)."""
    from copick_soup.objects import czii_pickable_objects

    chosen = [o for o in czii_pickable_objects() if o["name"] in per_tomogram]
    for o in chosen:
        o["metadata"] = dict(o["metadata"], simulation=dict(o["metadata"].get("simulation", {}),
                                                           per_tomogram=per_tomogram[o["name"]]))
    return chosen


@pytest.fixture(scope="module")
def init_soup(tmp_path_factory):
    """A soup of two unet3d_test members (denoised, wbp) of the six CZII classes."""
    from helpers import make_test_soup

    return make_test_soup(tmp_path_factory.mktemp("init"), tomo_types=("denoised", "wbp"))[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A lab's project: three annotated runs holding only `denoised` tomograms, two of the soup's six classes."""
    from copick_soup.simulate import simulate_project

    return simulate_project(tmp_path_factory.mktemp("lab") / "lab", runs=3, shape=(32, 64, 64), crowding=4.0,
                            tomo_types=["denoised"], objects=lab_objects(**{"apo-ferritin": 1500, "ribosome": 1000}))


def test_finetune_writes_a_soup_that_pick_uses_leaving_out_the_member_the_runs_cannot_feed(init_soup, lab, tmp_path):
    from copick_soup.data import open_project
    from copick_soup.model.manifest import MemberManifest

    out = tmp_path / "soups" / "lab"
    result = invoke("finetune", "-c", lab, "--init", init_soup, *TRAIN, *VAL, "--steps", 2, "--out", out,
                    "--set", "train_layers=decoder")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    plan = lines.index("plan:")
    assert lines[plan + 1].startswith("  unet3d_test-denoised: 2 steps (")
    assert lines[plan + 2] == "  unet3d_test-wbp: left out (no 'wbp' tomograms at 10.012 Å in the training runs)"
    assert lines[plan + 3].startswith("  expected: mining 0 s, training ") and "; total " in lines[plan + 3]
    assert lines.index("plan:") < min(i for i, line in enumerate(lines) if "fine-tuning on 2 run(s)" in line)
    assert "the project's 2 class(es) taken from its 6" in result.output  # the head keeps what it learnt
    soup = json.loads((out / "soup.json").read_text())
    assert [m["path"] for m in soup["members"]] == ["members/unet3d_test-denoised.json"]
    member = MemberManifest.read(out / "members" / "unet3d_test-denoised.json")
    assert member.class_names == ["apo-ferritin", "ribosome"]
    assert member.training["validated_by"] == "the soup search" and member.training["val_f4"] is not None
    assert member.training["config"]["steps"] == 2 and member.training["train_runs"] == ["exp_000", "exp_001"]
    assert member.training["config"]["train_layers"] == "decoder"  # --set over the lab default (head)
    assert not list((out / "members" / "stages").rglob("state.*"))  # nothing resumes them
    assert (out / "members" / "stages" / "unet3d_test-denoised" / "finetune" / "log.csv").exists()
    record = json.loads((out / "finetune.json").read_text())  # each phase's planned and real time
    assert set(record["planned_s"]) == set(record["spent_s"]) == {"mining", "training", "validating", "soup search"}
    assert record["steps"] == {"unet3d_test-denoised": 2} and any(line.startswith("took mining ") for line in lines)

    again = invoke("finetune", "-c", lab, "--init", init_soup, *TRAIN, *VAL, "--steps", 2, "--out", out)
    assert again.exit_code == 1 and again.output.strip().splitlines()[-1] == (
        f"Error: --out {out}: not empty; choose a new folder for the soup")

    picked = invoke("pick", "-c", lab, "--soup", out, "-r", "exp_002", "--user-id", "lab")
    assert picked.exit_code == 0, picked.output
    run = open_project(lab).get_run("exp_002")
    assert {p.pickable_object_name for p in run.picks if p.user_id == "lab"} == {"apo-ferritin", "ribosome"}


def test_a_budget_the_plan_exceeds_is_refused_before_any_work(init_soup, lab, tmp_path):
    result = invoke("finetune", "-c", lab, "--init", init_soup, *TRAIN, *VAL, "--steps", 500, "--budget", 0.01,
                    "--out", tmp_path / "out")
    last = result.output.strip().splitlines()[-1]
    assert result.exit_code == 1 and last.startswith("Error: the plan takes about ")
    assert "over --budget 0.01 min: " in last and "fine-tune fewer members with --members" in last
    assert "plan:" in result.output and not (tmp_path / "out").exists()  # the plan said, nothing written


def test_a_member_the_init_soup_gives_no_weight_is_left_out_unless_named(init_soup, lab, tmp_path):
    """`fast` carries its `wbp` member at weight 0: fine-tuned, it stayed at 0, so by default it is not fine-tuned."""
    from copick_soup.model.manifest import SoupManifest

    soup = SoupManifest.read(init_soup)
    soup.members[0].weight = 0.0  # the denoised member, the only one these runs can feed
    (tmp_path / "init").mkdir()
    (tmp_path / "init" / "soup.json").write_text(json.dumps(soup.to_json()))
    result = invoke("finetune", "-c", lab, "--init", tmp_path / "init", *TRAIN, *VAL, "--out", tmp_path / "a")
    assert result.exit_code == 1 and result.output.strip().splitlines()[-1] == (
        f"Error: none of the members' tomogram types (wbp) is in the training runs; they have denoised; "
        f"unet3d_test-denoised: left out (weight 0 in '{tmp_path / 'init'}'; --members unet3d_test-denoised "
        f"fine-tunes it); unet3d_test-wbp: left out (no 'wbp' tomograms at 10.012 Å in the training runs)")
    named = invoke("finetune", "-c", lab, "--init", tmp_path / "init", *TRAIN, *VAL, "--members",
                   "unet3d_test-denoised", "--budget", 1e-4, "--out", tmp_path / "b")
    # named, it is kept: the plan says so, then the budget stops it before any work
    lines = named.output.splitlines()
    assert named.exit_code == 1 and lines[lines.index("plan:") + 1].startswith("  unet3d_test-denoised: 300 steps (")


def project(folder: Path, **kwargs) -> Path:
    from copick_soup.simulate import simulate_project

    kwargs.setdefault("objects", lab_objects(**{"apo-ferritin": 1500, "ribosome": 1000}))
    kwargs.setdefault("crowding", 4.0)
    return simulate_project(folder, runs=3, shape=(32, 64, 64), tomo_types=["denoised"], **kwargs)


def test_bad_input_is_one_line_before_any_work(init_soup, lab, tmp_path):
    proteasome = dict(name="proteasome", is_particle=True, label=9, radius=100.0)
    cases = [
        (lab, [*TRAIN, "--val-runs", "exp_001"], "Error: run(s) exp_001 are both training and validation runs"),
        (lab, ["--train-runs", "exp_000,exp_009", *VAL], "Error: unknown run(s) exp_009; the project has "),
        (lab, [*TRAIN, *VAL, "--set", "train_layers=encoder"],
         "Error: --set: 'train_layers' must be one of all, decoder, head, got 'encoder'"),
        (lab, [*TRAIN, *VAL, "--members", "unet3d_tiny-denoised"],
         "Error: --members: no member unet3d_tiny-denoised in the init soup; it has unet3d_test-denoised, "),
        (project(tmp_path / "new", objects=[*lab_objects(ribosome=1000), proteasome]), [*TRAIN, *VAL],
         "Error: class(es) proteasome of the project match no class of the members of "),
        (project(tmp_path / "unpicked", objects=lab_objects(ribosome=1000, **{"beta-amylase": 0})), [*TRAIN, *VAL],
         "Error: no training run (exp_000, exp_001) holds picks of beta-amylase by user 'curation' session '0'"),
        (project(tmp_path / "empty", crowding=0.0), [*TRAIN, *VAL],
         "Error: training run(s) exp_000, exp_001 hold no picks by user 'curation' session '0'"),
    ]
    for config, runs, error in cases:
        result = invoke("finetune", "-c", config, "--init", init_soup, *runs, "--out", tmp_path / "out")
        assert result.exit_code == 1 and result.output.strip().splitlines()[-1].startswith(error), result.output
        assert "plan:" not in result.output and not (tmp_path / "out").exists()


def test_copick_discovers_the_finetune_plugin():
    copick = Path(sys.executable).parent / "copick"
    out = subprocess.run([copick, "training", "soup-finetune", "--help"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and "--budget" in out.stdout and "--val-runs" in out.stdout


def test_a_short_fine_tune_mines_hard_negatives_once():
    from copick_soup.train.config import TrainConfig
    from copick_soup.train.loop import mining_due

    def minings(steps):
        mined, at = None, []
        for step in range(steps):
            if mining_due(TrainConfig(steps=steps, p_hard=0.3, hard_every=500), step, mined):
                mined = step
                at.append(step)
        return at

    assert minings(100) == minings(600) == [0]  # at 500, 100 steps left would hardly use new negatives
    assert minings(800) == [0, 500] and minings(2500) == [0, 500, 1000, 1500, 2000]  # the recipes' as before
    assert not mining_due(TrainConfig(p_hard=0.0), 0, None)


def test_a_project_with_some_of_the_member_s_classes_keeps_their_outputs(init_soup):
    import torch

    from copick_soup.model.checkpoint import load_member
    from copick_soup.model.manifest import member_paths
    from copick_soup.model.registry import create_model
    from copick_soup.train.loop import load_init

    path = member_paths(init_soup)[0]
    init, manifest = load_member(path)
    classes = [c for c in manifest.classes if c.name in ("apo-ferritin", "ribosome")][::-1]  # some, reordered
    model = create_model("unet3d_test", n_classes=len(classes))
    said = []
    load_init(model, path, classes, warn=said.append)
    rows = [manifest.class_names.index(c.name) for c in classes]
    assert torch.equal(model.head.weight, init.head.weight[rows]) and torch.equal(model.head.bias, init.head.bias[rows])
    assert said == [f"{manifest.label}: the project's 2 class(es) taken from its 6"]
