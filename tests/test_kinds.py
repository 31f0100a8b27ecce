"""Members find their tomograms by kind: Kaggle names and copick's portal names alike, or as --tomo-map says."""

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import SMALLER, make_test_soup

from copick_soup.cli import main
from copick_soup.data import open_project, read_picks
from copick_soup.data.kinds import kind_of, match_tomogram, parse_tomo_map
from copick_soup.errors import SoupError
from copick_soup.objects import VOXEL_SIZE, classes_from_root
from copick_soup.train.dataset import load_volumes

PORTAL_NAMES = {"denoised": "wbp-denoised-denoiset-ctfdeconv", "wbp": "wbp-raw",
                "ctfdeconvolved": "wbp-filtered-ctfdeconv"}


def test_kinds_of_kaggle_and_portal_names():
    assert [kind_of(n) for n in ("wbp", "denoised", "ctfdeconvolved", "isonetcorrected")] == \
        ["wbp", "denoised", "ctfdeconvolved", None]
    assert kind_of("wbp-raw") == kind_of("wbp-filtered") == "wbp"
    assert kind_of("wbp-raw-ctfdeconv") == kind_of("wbp-filtered-ctfdeconv") == "ctfdeconvolved"
    assert kind_of("wbp-denoised-denoiset-ctfdeconv") == kind_of("wbp-denoised-cryocare") == "denoised"
    assert kind_of("sart-raw") is None and kind_of("wbp-unknown") is None


def test_the_choice_among_several_of_a_kind_is_deterministic_and_says_what_else_there_was():
    names = ["wbp-filtered", "wbp-raw", "wbp-denoised-denoiset-ctfdeconv", "sart-raw"]
    assert match_tomogram("wbp", names) == ("wbp-raw", ["wbp-filtered"])
    assert match_tomogram("wbp", [*names, "wbp"]) == ("wbp", ["wbp-raw", "wbp-filtered"])  # its own name first
    assert match_tomogram("ctfdeconvolved", names) == (None, [])
    assert match_tomogram("wbp", names, {"wbp": "sart-raw"}) == ("sart-raw", [])
    assert match_tomogram("wbp", names, {"wbp": "missing"}) == (None, [])
    assert parse_tomo_map(["denoised=a,wbp=b", "ctfdeconvolved=c"]) == dict(denoised="a", wbp="b", ctfdeconvolved="c")
    with pytest.raises(SoupError, match="--tomo-map: expected KIND=TOMOGRAM, got 'denoised'"):
        parse_tomo_map(["denoised"])


@pytest.fixture(scope="module")
def soup(tmp_path_factory):
    return make_test_soup(tmp_path_factory.mktemp("soup"), ("denoised", "wbp"))[1]


def rename_as_the_portal_does(config):
    """Rewrite every run's tomograms under copick's portal names (the same arrays)."""
    import zarr

    for run in open_project(config).runs:
        vs = run.voxel_spacings[0]
        for old, new in PORTAL_NAMES.items():
            array = np.asarray(zarr.open(vs.get_tomograms(old)[0].zarr(), mode="r")["0"])
            vs.new_tomogram(tomo_type=new).from_numpy(array)
            vs.delete_tomograms(old)


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_portal_named_tomograms_are_read_by_kind_and_picked_as_the_kaggle_names_are(soup, make_project):
    # crowded: at SMALLER and the default crowding the run may hold no particle, and training would skip it
    kaggle, portal = (make_project(name, runs=1, seed=8, shape=SMALLER, crowding=10.0) for name in ("kaggle", "portal"))
    rename_as_the_portal_does(portal)
    for config in (kaggle, portal):
        result = invoke("pick", "-c", config, "--soup", soup, "--window", 32, "--amp", "none", "--device", "cpu")
        assert result.exit_code == 0, result.output
    assert "unet3d_test-denoised: reads 'wbp-denoised-denoiset-ctfdeconv'" in result.output
    assert "unet3d_test-wbp: reads 'wbp-raw'" in result.output
    assert result.output.index("reads 'wbp-raw'") < result.output.index("exp_000 ")  # said before the table
    names = [c.name for c in classes_from_root(open_project(kaggle))]
    picked = [read_picks(open_project(c).runs[0], names, "copick-soup", "0") for c in (kaggle, portal)]
    assert sum(len(p) for p in picked[0].values()) > 0
    for name in names:
        np.testing.assert_allclose(picked[1][name], picked[0][name])
    root = open_project(portal)  # training finds them the same way
    volumes = load_volumes(root, root.runs, ["denoised"], classes_from_root(root), VOXEL_SIZE, "curation", "0")
    assert len(volumes) == 1 and volumes[0].tomo_type == "denoised"


def test_tomo_map_overrides_the_match_and_names_what_exists_when_wrong(soup, make_project):
    config = make_project("mapped", runs=1, seed=9, shape=SMALLER)
    rename_as_the_portal_does(config)
    result = invoke("pick", "-c", config, "--soup", soup, "--window", 32, "--device", "cpu",
                    "--tomo-map", "denoised=wbp-raw")
    assert result.exit_code == 0, result.output
    assert "unet3d_test-denoised: reads 'wbp-raw'" in result.output
    bad = invoke("pick", "-c", config, "--soup", soup, "--session-id", "1", "--tomo-map", "denoised=nope")
    assert bad.exit_code != 0
    assert bad.output.strip().splitlines()[-1] == (
        "Error: --tomo-map: no run has a tomogram 'nope'; the runs have wbp-denoised-denoiset-ctfdeconv, "
        "wbp-filtered-ctfdeconv, wbp-raw")
    other = invoke("pick", "-c", config, "--soup", soup, "--session-id", "1", "--tomo-map", "isonet=wbp-raw")
    assert other.output.strip().splitlines()[-1] == (
        "Error: --tomo-map: no member reads 'isonet'; the soup's members read denoised, wbp")
