"""INT8 members (issue 48): quantisation-aware fine-tuning with the float member as teacher (train/quantise.py),
members that round-trip through safetensors and their manifest, OpenVINO running their quantisers as INT8, the
shipped `fast-int8` finding `fast`'s picks, and a one-line error where NNCF is missing."""

import sys

import numpy as np
import pytest
import torch
from helpers import make_test_soup

from copick_soup.data import open_project, read_picks
from copick_soup.ensemble import Ensemble, InferenceSettings
from copick_soup.errors import SoupError
from copick_soup.model.checkpoint import load_member
from copick_soup.model.int8 import is_int8
from copick_soup.model.manifest import MemberManifest, SoupManifest
from copick_soup.pick import PickOptions, pick_run
from copick_soup.train.quantise import quantise_on_project

pytest.importorskip("nncf")


@pytest.fixture(scope="module")
def members(tmp_path_factory, simulated):
    """(float member, its INT8 copy after a few fine-tuning steps on the small project's runs)."""
    folder = tmp_path_factory.mktemp("int8")
    member = make_test_soup(folder / "float")[0][0]
    return member, quantise_on_project(simulated, member, folder / "int8", steps=4, echo=lambda m: None)


def test_an_int8_member_keeps_its_quantisers_and_its_teacher_on_disk(members):
    member, int8 = members
    float_model, teacher = load_member(member)
    model, manifest = load_member(int8)
    assert is_int8(model) and not is_int8(float_model)
    assert manifest.name == f"{teacher.name}-int8" and manifest.tomo_type == teacher.tomo_type
    assert manifest.int8["teacher_sha256"] == teacher.sha256 and manifest.int8["steps"] == 4
    assert manifest.thresholds() == teacher.thresholds()  # its target was the teacher's heatmap: same scale
    x = torch.randn(1, 1, 16, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        again, _ = load_member(int8)
        assert torch.equal(model(x), again(x))  # loading is deterministic: the quantisers' scales are in the file
        assert not torch.equal(model(x), float_model(x))  # and they act


def picks_of(run, soup_name: str, user: str, runtime: str = "openvino") -> dict:
    soup = Ensemble.load(soup_name)
    pick_run(run, soup, InferenceSettings(amp="none", runtime=runtime), PickOptions(user_id=user), echo=lambda m: None)
    return read_picks(run, soup.class_names, user, "0", with_scores=True)


def assert_clear_picks_found(reference: dict, picks: dict, soup_name: str, margin: float = 0.1) -> None:
    """Every reference pick clear of its class threshold (by `margin`) is found again in `picks`, as the same
    class, within a fifth of the class radius (where the CZII metric accepts half); at least ten were checked."""
    soup = SoupManifest.read(soup_name)
    radius = {c.name: c.radius for c in soup.classes}
    clear = 0
    for name, (positions, scores) in reference.items():
        found = picks[name][0]
        for position in positions[scores >= soup.thresholds[name] + margin]:
            clear += 1
            assert len(found) and np.linalg.norm(found - position, axis=1).min() <= 0.2 * radius[name], name
    assert clear >= 10


def test_openvino_runs_the_quantisers_in_int8_as_torch_emulates_them(crowded_project):
    from copick_soup.ensemble.runtimes import OpenVinoPredictor

    model, manifest = load_member(SoupManifest.read("fast-int8").members[0].path)
    ops = {op.get_type_name() for op in OpenVinoPredictor(model, None, None, manifest.sha256).model.get_ordered_ops()}
    assert "FakeQuantize" in ops  # what OpenVINO's CPU plugin turns into integer kernels
    run = open_project(crowded_project).runs[0]
    emulated = picks_of(run, "fast-int8", "torch", runtime="torch")
    assert_clear_picks_found(emulated, picks_of(run, "fast-int8", "openvino"), "fast-int8")


def test_the_shipped_int8_soup_finds_fasts_picks(crowded_project):
    """`fast-int8` kept `fast`'s F4 on held-out runs (docs/results.md): here every pick of `fast` clear of its
    threshold (by 0.1, a third of the lowest threshold) is found again by it."""
    fast_int8, fast = SoupManifest.read("fast-int8"), SoupManifest.read("fast")
    assert fast_int8.thresholds == fast.thresholds and fast_int8.classes == fast.classes
    run = open_project(crowded_project).runs[0]
    assert_clear_picks_found(picks_of(run, "fast", "fast"), picks_of(run, "fast-int8", "int8"), "fast")


def test_an_int8_member_without_nncf_is_a_one_line_error(members, monkeypatch):
    monkeypatch.setitem(sys.modules, "nncf", None)  # what `import nncf` meets where it is not installed
    with pytest.raises(SoupError) as error:
        load_member(members[1])
    assert str(error.value) == f"{members[1]}: an INT8 member needs NNCF; pip install 'copick-soup[int8]' (NNCF)"
    assert MemberManifest.read(members[1]).int8  # the manifest itself reads without NNCF
    with pytest.raises(SoupError, match=r"-int8\.json: an INT8 member needs NNCF"):
        Ensemble.load("fast-int8")  # refused when the soup is read, before any run is picked


def test_cli_quantise_refuses_runs_it_cannot_use_in_one_line_and_writes_nothing(members, project, tmp_path):
    from click.testing import CliRunner

    from copick_soup.cli import main

    out = tmp_path / "int8"
    for args, error in ((["-r", "TS_404"], "Error: unknown run(s) TS_404"),
                        (["--picks-user", "nobody"], "Error: " + str(project) + ": no run has picks by 'nobody'")):
        result = CliRunner().invoke(main, ["quantise", "-c", str(project), "--member", str(members[0]),
                                           "--out", str(out), *args])
        assert result.exit_code != 0 and result.output.strip().splitlines()[-1].startswith(error), result.output
        assert not out.exists()


def test_pick_says_which_members_run_in_int8(project):
    from click.testing import CliRunner

    from copick_soup.cli import main

    result = CliRunner().invoke(main, ["pick", "-c", str(project), "--soup", "fast-int8", "-r", "exp_000"])
    assert result.exit_code == 0, result.output
    assert "INT8 member(s): unet3d_tiny-denoised-int8 (integer kernels)" in result.output
    plain = CliRunner().invoke(main, ["pick", "-c", str(project), "--soup", "fast", "-r", "exp_000",
                                      "--user-id", "float"])
    assert plain.exit_code == 0 and "INT8" not in plain.output
