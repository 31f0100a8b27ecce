"""Batch picking on a real local Ray cluster (started once for the test session)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from helpers import copy_project  # noqa: E402

from copick_soup.data import open_project  # noqa: E402
from copick_soup.simulate import simulate_project  # noqa: E402


@pytest.fixture(scope="module")
def four_runs(tmp_path_factory):
    """A 4-run project, simulated once for the module (tests get copies)."""
    return simulate_project(tmp_path_factory.mktemp("four") / "p", runs=4, shape=(32, 64, 64), crowding=10.0, seed=21)


@pytest.fixture
def batch(four_runs, tmp_path, ray_cluster, test_soup):
    """A fresh copy of the 4-run project and a soup of one unet3d_test member."""
    config = copy_project(four_runs, tmp_path / "p")
    return str(config), test_soup, [r.name for r in open_project(config).runs]


def make(config, soup, slow=False):
    from ray_jobs.pick import PickActor

    settings = dict(window=32, device="auto")
    options = dict(user_id="ray", session_id="0")
    return lambda: PickActor.options(num_cpus=1).remote(config, soup, settings, options, False)


def test_every_run_is_picked_exactly_once_and_a_run_left_half_written_is_picked_again(batch):
    from ray_jobs.pick import runs_to_pick, schedule

    config, soup, runs = batch
    report = schedule(make(config, soup), runs, n_actors=2, echo=lambda m: None, timeout=120)
    assert sorted(r["run"] for r in report["done"]) == sorted(runs) and not report["failed"]
    assert len({r["pid"] for r in report["done"]}) == 2  # both actors worked
    root = open_project(config)
    for run in root.runs:
        assert len(run.get_picks(user_id="ray", session_id="0", object_name="ribosome")) == 1
    todo, skipped, unfinished = runs_to_pick(config, soup, None, "ray", "0", overwrite=False)
    assert todo == [] and sorted(skipped) == sorted(runs) and not unfinished  # a rerun has nothing left to do
    # A writer killed in the middle of runs[1] left one class unwritten; runs[3] was never picked: a rerun picks
    # both, replacing the partial picks, and skips the rest.
    [partial] = root.get_run(runs[1]).get_picks(user_id="ray", session_id="0", object_name="ribosome")
    root.get_run(runs[1]).delete_picks(user_id="ray", session_id="0", object_name=partial.pickable_object_name)
    for picks in root.get_run(runs[3]).get_picks(user_id="ray", session_id="0"):
        root.get_run(runs[3]).delete_picks(user_id="ray", session_id="0", object_name=picks.pickable_object_name)
    messages = []
    todo, skipped, unfinished = runs_to_pick(config, soup, None, "ray", "0", overwrite=False, echo=messages.append)
    assert (todo, skipped, unfinished) == ([runs[1], runs[3]], [runs[0], runs[2]], [runs[1]])
    assert "interrupted write left picks for 5 of 6 classes" in messages[0]
    report = schedule(make(config, soup), todo, n_actors=1, echo=lambda m: None, timeout=120,
                      unfinished=set(unfinished))
    assert sorted(r["run"] for r in report["done"]) == [runs[1], runs[3]] and not report["failed"]
    assert runs_to_pick(config, soup, None, "ray", "0", overwrite=False)[:2] == ([], runs)


def test_killing_an_actor_mid_batch_still_completes_every_run(batch):
    from ray_jobs.pick import schedule

    config, soup, runs = batch
    made, killed = [], []

    def make_actor():
        actor = make(config, soup)()
        made.append(actor)
        return actor

    def echo(message):  # after the first finished run, kill the first actor: its next run must be retried
        if not killed and "picks in" in message:
            ray.kill(made[0], no_restart=True)
            killed.append(message)

    report = schedule(make_actor, runs, n_actors=2, echo=echo, timeout=120)
    assert killed
    assert not report["failed"], report["failed"]
    assert sorted(r["run"] for r in report["done"]) == sorted(runs)
    assert report["retried"] and len(made) == 3


def test_a_run_with_bad_data_is_reported_and_the_batch_goes_on(batch):
    from ray_jobs.pick import schedule

    config, soup, runs = batch
    root = open_project(config)
    root.get_run(runs[1]).voxel_spacings[0].delete_tomograms("denoised")
    report = schedule(make(config, soup), runs, n_actors=2, echo=lambda m: None, timeout=120)
    assert len(report["done"]) == 3
    error = f"run {runs[1]}: none of the soup's tomogram types (denoised) is here; it has ctfdeconvolved, wbp"
    assert report["failed"] == [dict(run=runs[1], error=f"{error} (map one with --tomo-map TYPE=NAME)")]


@pytest.fixture
def s3_batch(four_runs, tmp_path, ray_cluster, test_soup):
    """A copy of the 4-run project of `batch`, served from a real local S3 server as the portal serves data."""
    pytest.importorskip("moto")
    from copick_soup.testing.s3server import FAST_FAIL, S3Server, publish_project

    local = copy_project(four_runs, tmp_path / "p")
    with S3Server() as server:
        config = publish_project(local, server, "10445", tmp_path / "overlay", fs_args=FAST_FAIL)
        yield str(config), test_soup, [r.name for r in open_project(local).runs], server


def test_actors_stream_runs_from_s3_and_write_each_run_once(s3_batch, tmp_path):
    from ray_jobs.pick import runs_to_pick, schedule

    config, soup, runs, _ = s3_batch
    report = schedule(make(config, soup), runs, n_actors=2, echo=lambda m: None, timeout=120)
    assert sorted(r["run"] for r in report["done"]) == sorted(runs) and not report["failed"]
    for run in runs:  # picks land in the local overlay, one file per class
        assert len(list((tmp_path / "overlay" / "ExperimentRuns" / run / "Picks").glob("ray_0_*.json"))) == 6
    assert runs_to_pick(config, soup, None, "ray", "0", overwrite=False) == ([], runs, [])


def test_unreachable_s3_fails_runs_with_reasons_after_bounded_retries(s3_batch):
    from ray_jobs.pick import schedule

    config, soup, runs, server = s3_batch
    server.stop()  # the copick config still names it: every read now fails
    report = schedule(make(config, soup), runs, n_actors=2, echo=lambda m: None, timeout=120)
    assert not report["done"] and sorted(f["run"] for f in report["failed"]) == sorted(runs)
    assert all("failed after 3 attempt(s)" in f["error"] for f in report["failed"]), report["failed"]


def test_unknown_dataset_ids_are_an_error_before_any_work(tmp_path):
    from copick_soup.data.portal import dataset_config, parse_dataset_ids
    from copick_soup.errors import SoupError

    portal = Path(__file__).resolve().parents[1] / "configs" / "czii_portal.json"
    out = dataset_config(portal, [10445, 10446], tmp_path / "d.json", known=lambda ids: {10445, 10446, 10440})
    assert json.loads(out.read_text())["dataset_ids"] == [10445, 10446]
    with pytest.raises(SoupError, match=r"unknown dataset ID\(s\) 99999 on the CZ cryoET Data Portal"):
        dataset_config(portal, [10445, 99999], tmp_path / "e.json", known=lambda ids: {10445})
    with pytest.raises(SoupError, match="needs a CZ cryoET Data Portal config"):
        dataset_config(simulate_project(tmp_path / "p", runs=1, shape=(16, 32, 32)), [10445], tmp_path / "f.json")
    with pytest.raises(SoupError, match="'10x45' is not a dataset ID"):
        parse_dataset_ids("10440,10x45")


def test_dataset_ids_are_checked_against_the_portal_before_ray_starts(tmp_path, test_soup):
    """Offline (as in CI) the lookup fails after bounded retries; online the ID is unknown: either way one line."""
    portal = Path(__file__).resolve().parents[1] / "configs" / "czii_portal.json"
    done = subprocess.run([sys.executable, "-m", "ray_jobs.pick", "-c", str(portal), "--soup", test_soup,
                           "--dataset-ids", "999999999"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COPICK_SOUP_IO_ATTEMPTS": "2"}, cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("Error: ")
    assert "dataset IDs: failed after 2 attempt(s)" in done.stderr or "unknown dataset ID(s) 999999999" in done.stderr
    assert "run(s) to pick" not in done.stdout  # no Ray work started


def test_bad_pick_options_are_an_error_before_ray_starts(tmp_path, test_soup, capsys, monkeypatch):
    from ray_jobs import pick

    config = simulate_project(tmp_path / "p", runs=1, shape=(16, 32, 32))
    done = subprocess.run([sys.executable, "-m", "ray_jobs.pick", "-c", str(config), "--soup", test_soup,
                           "--window", "33"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr == "Error: --window 33: this soup's members (unet3d_test) need a multiple of 2; try 32 or 34\n"
    assert "run(s) to pick" not in done.stdout  # no Ray work started

    def no_ray(*args, **kwargs):  # a check that stopped refusing fails here instead of picking in this process
        raise AssertionError("ray.init called: bad input reached Ray")

    monkeypatch.setattr(pick.ray, "init", no_ray)
    # Values outside an option's range are refused by click, exactly as `copick-soup pick` refuses them; checked in
    # this process (each subprocess costs seconds of imports): main's return value is the exit status.
    for option, error in ((["--tta", "9"], "Error: Invalid value for '--tta': 9 is not in the range 1<=x<=8."),
                          (["--batch-size", "0"], "Error: Invalid value for '--batch-size': 0 is not in the range "
                                                  "x>=1.")):
        assert pick.main(["-c", str(config), "--soup", test_soup, *option]) == 2
        out, err = capsys.readouterr()
        assert err.strip().splitlines()[-1] == error
        assert "run(s) to pick" not in out


def test_the_example_cluster_yaml_is_a_valid_ray_cluster_config():
    import yaml
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "ray-cluster.yaml").read_text())
    validate_config(prepare_config(config))  # Ray's own schema: raises on a wrong or missing field
    assert config["available_node_types"]["head"]["resources"] == {"GPU": 0}  # actors never land on the head

