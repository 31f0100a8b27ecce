"""Batch picking on a real local Ray cluster (started once for the test session)."""

import pytest

ray = pytest.importorskip("ray")

from copick_soup.data import open_project  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


@pytest.fixture
def batch(tmp_path, cluster):
    """A 4-run project and a soup of one unet3d_test member."""
    from copick_soup.objects import VOXEL_SIZE, classes_from_root
    from copick_soup.simulate import simulate_project
    from copick_soup.soup.manifest import write_soup
    from copick_soup.train.config import TrainConfig
    from copick_soup.train.dataset import load_volumes
    from copick_soup.train.loop import train_member

    config = simulate_project(tmp_path / "p", runs=4, shape=(32, 64, 64), crowding=10.0, seed=21)
    root = open_project(config)
    classes = classes_from_root(root)
    vols = load_volumes(root, root.runs[:1], ["denoised"], classes, VOXEL_SIZE, "curation", "0")
    member = train_member(TrainConfig(variant="unet3d_test", patch=16, steps=2, val_every=2, val_threshold=0.0),
                          classes, vols, [], tmp_path / "m", VOXEL_SIZE, "denoised")
    soup = write_soup(tmp_path / "soup" / "soup.json", [(member, 1.0)], classes, VOXEL_SIZE,
                      {c.name: 0.0 for c in classes})
    return str(config), str(soup), [r.name for r in root.runs]


def make(config, soup, slow=False):
    from ray_jobs.pick import PickActor

    options = dict(window=32, user_id="ray", session_id="0")
    return lambda: PickActor.options(num_cpus=1).remote(config, soup, options, False)


def test_every_run_is_picked_exactly_once(batch):
    from ray_jobs.pick import runs_to_pick, schedule

    config, soup, runs = batch
    report = schedule(make(config, soup), runs, n_actors=2, echo=lambda m: None, timeout=120)
    assert sorted(r["run"] for r in report["done"]) == sorted(runs) and not report["failed"]
    assert len({r["pid"] for r in report["done"]}) == 2  # both actors worked
    root = open_project(config)
    for run in root.runs:
        assert len(run.get_picks(user_id="ray", session_id="0", object_name="ribosome")) == 1
    todo, skipped = runs_to_pick(config, soup, None, "ray", "0", overwrite=False)
    assert todo == [] and sorted(skipped) == sorted(runs)  # a rerun has nothing left to do


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
    assert report["failed"] == [dict(run=runs[1], error=f"run {runs[1]}: none of the soup's tomogram types "
                                                         f"(denoised) is here; it has ctfdeconvolved, wbp")]
