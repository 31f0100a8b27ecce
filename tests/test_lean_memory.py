"""What a `pick` process holds: only the members a run uses are loaded and compiled, OpenVINO members take turns
holding their working memory, and none of it changes a heatmap."""

import numpy as np
import pytest
import torch

from copick_soup.data import open_project
from copick_soup.ensemble import Ensemble, InferenceSettings, windows
from copick_soup.ensemble.runtimes import OpenVinoPredictor
from copick_soup.ensemble.windows import Source, stream_heatmaps
from copick_soup.pick import PickOptions, pick_run

pytest.importorskip("openvino")


def loaded(ensemble) -> set:
    return {m.manifest.name for m in ensemble.members if m.loaded}


@pytest.fixture(scope="module")
def denoised_only(tmp_path_factory):
    """A one-run project with wbp and denoised tomograms only: the default soup's ctfdeconvolved member (weight
    0.5) cannot run, and its wbp member (weight 0) is not needed."""
    from copick_soup.simulate import simulate_project

    return simulate_project(tmp_path_factory.mktemp("lean") / "p", runs=1, shape=(32, 64, 64), crowding=4.0,
                            tomo_types=("wbp", "denoised"))


def test_a_soup_loads_no_network_until_a_run_uses_it_and_then_only_those_that_run(denoised_only):
    soup = Ensemble.load("default")
    assert loaded(soup) == set()
    settings = InferenceSettings(device="cpu", runtime="openvino")
    pick_run(open_project(denoised_only).runs[0], soup, settings, PickOptions(), echo=lambda line: None)
    assert loaded(soup) == {"unet3d_medium-denoised", "unet3d_tiny-denoised"}
    compiled = list(soup.compiled.values())
    assert len(compiled) == 2 and all(len(p.compiled) == 1 for p in compiled)  # one plan each: the run's window


def test_members_of_weight_0_load_only_where_they_stand_in(tmp_path):
    from copick_soup.simulate import simulate_project

    only_wbp = simulate_project(tmp_path / "p", runs=1, shape=(32, 64, 64), tomo_types=("wbp",))
    soup = Ensemble.load("default")
    soup.inputs(open_project(only_wbp).runs[0], InferenceSettings(device="cpu", runtime="torch"),
                echo=lambda line: None)
    assert loaded(soup) == {"unet3d_tiny-wbp"}


def test_a_corrupt_member_is_refused_when_the_soup_is_read_not_when_a_run_first_uses_it(tmp_path):
    import shutil

    from copick_soup.errors import SoupError
    from copick_soup.model.manifest import SoupManifest

    folder = tmp_path / "soup"
    shutil.copytree(SoupManifest.read("default").path.parent, folder)
    weights = folder / "unet3d_tiny-wbp.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(SoupError, match="unet3d_tiny-wbp.safetensors: corrupt checkpoint"):
        Ensemble.load(folder / "soup.json")


def nets(seeds):
    from helpers import batch_norm_unet

    return [batch_norm_unet(seed, norm="fixed") for seed in seeds]


def test_releasing_openvinos_working_memory_changes_no_output():
    net = nets([3])[0]
    predictor = OpenVinoPredictor(net)
    x = torch.randn(1, 1, 16, 24, 24, generator=torch.Generator().manual_seed(0))
    first = predictor(x)
    predictor.release()
    assert torch.equal(predictor(x), first)


def test_an_openvino_member_keeps_the_plans_of_its_latest_shapes_only():
    predictor = OpenVinoPredictor(nets([4])[0])
    for side in (16, 24, 32):
        predictor(torch.zeros(1, 1, 16, side, side))
    assert list(predictor.compiled) == [(1, 1, 16, 24, 24), (1, 1, 16, 32, 32)][-OpenVinoPredictor.KEEP_SHAPES:]


class Recorder:
    """A predictor that notes its calls and releases in one shared log."""

    def __init__(self, name, log):
        self.name, self.log = name, log

    def __call__(self, batch):
        self.log.append(("call", self.name))
        return torch.full((batch.shape[0], 2, *batch.shape[2:]), 0.5)

    def release(self):
        self.log.append(("release", self.name))


def test_several_members_release_after_each_call_and_one_member_only_when_the_run_is_done():
    volume = np.zeros((16, 32, 32), np.float32)
    for names in (["a", "b"], ["a"]):
        log = []
        sources = [Source(Recorder(n, log), volume, 1.0, (0.0, 1.0)) for n in names]
        list(stream_heatmaps(sources, 2, 16))
        calls = [i for i, (what, _) in enumerate(log) if what == "call"]
        if len(names) > 1:
            assert all(log[i + 1] == ("release", log[i][1]) for i in calls)
        else:
            assert log[-1] == ("release", "a") and log.count(("release", "a")) == 1


def test_members_taking_turns_give_the_same_heatmap_as_members_that_keep_their_memory(monkeypatch):
    volume = np.random.default_rng(1).normal(size=(24, 40, 40)).astype(np.float32)
    members = [OpenVinoPredictor(net) for net in nets([5, 6])]
    sources = [Source(p, volume, w, (0.0, 1.0)) for p, w in zip(members, (0.7, 0.3))]

    def heatmap():
        return np.concatenate([c.planes.copy() for c in stream_heatmaps(sources, 2, 16)], axis=1)

    turns = heatmap()
    monkeypatch.setattr(windows, "release", lambda predict_batch: None)
    assert np.array_equal(heatmap(), turns)
