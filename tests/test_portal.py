"""copick's own CZ cryoET Data Portal backend, pointed at a local stand-in of the portal
(copick_soup/testing/portal_standin.py): its GraphQL API answering the portal client's queries, and an S3 server
holding the data laid out as the portal's."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import make_test_soup

pytest.importorskip("moto")
pytest.importorskip("trustme")

from copick_soup.cli import main  # noqa: E402
from copick_soup.data import open_project, read_picks  # noqa: E402
from copick_soup.data.kinds import kind_of  # noqa: E402
from copick_soup.data.tomogram import open_tomogram  # noqa: E402
from copick_soup.objects import VOXEL_SIZE  # noqa: E402
from copick_soup.simulate import simulate_project  # noqa: E402
from copick_soup.testing.portal_standin import PortalData, PortalServer, publish_portal  # noqa: E402
from copick_soup.testing.s3server import S3Server  # noqa: E402

DATASETS = {10440: ["exp_000", "exp_001"], 10446: ["exp_002"]}
PORTAL_RUNS = {"16463": "exp_000", "16464": "exp_001", "16465": "exp_002"}  # copick names portal runs by ID


@pytest.fixture(scope="module")
def portal(tmp_path_factory):
    """(local project, the same runs as portal datasets 10440 and 10446 at 10.000 Å, the stand-in)."""
    folder = tmp_path_factory.mktemp("portal")
    local = simulate_project(folder / "local", runs=3, shape=(32, 64, 64), crowding=12.0, seed=41)
    with S3Server() as s3, pytest.MonkeyPatch.context() as env:
        data = PortalData()
        config = publish_portal(local, s3, data, DATASETS, folder / "overlay")
        with PortalServer(data, folder) as server:
            for name, value in {**server.env, "AWS_ENDPOINT_URL_S3": s3.endpoint}.items():
                env.setenv(name, value)
            yield local, config, server


@pytest.fixture(scope="module")
def soup(tmp_path_factory):
    """A soup with a member of each kind: on a portal run each must find its tomogram by the portal's names."""
    return make_test_soup(tmp_path_factory.mktemp("soup"), ("wbp", "denoised", "ctfdeconvolved"))[1]


def test_copicks_portal_backend_reads_the_stand_in_as_the_portal(portal):
    local, config, _ = portal
    root, source = open_project(config), open_project(local)
    assert sorted(run.name for run in root.runs) == sorted(PORTAL_RUNS)
    run = root.get_run("16463")
    assert [vs.voxel_size for vs in run.voxel_spacings] == [10.0]
    assert sorted(t.tomo_type for t in run.voxel_spacings[0].tomograms) == [
        "wbp-denoised-denoiset-ctfdeconv", "wbp-denoised-isonet", "wbp-filtered-ctfdeconv", "wbp-raw"]
    np.testing.assert_array_equal(open_tomogram(run, 10.0, "wbp-denoised-denoiset-ctfdeconv")[:],
                                  open_tomogram(source.get_run("exp_000"), VOXEL_SIZE, "denoised")[:])
    truth = [p for p in run.picks if p.user_id == "data-portal"]
    assert len({p.session_id for p in truth}) == len(truth) > 1  # one session per annotation file
    names = [o.name for o in root.pickable_objects]
    assert "ferritin-complex" in names and "apo-ferritin" not in names
    local_truth = read_picks(source.get_run("exp_000"), ["apo-ferritin"], "curation", "0")["apo-ferritin"]
    portal_truth = read_picks(run, ["ferritin-complex"], "data-portal", "*")["ferritin-complex"]
    # the portal stores voxel coordinates; copick multiplies them by the portal's spacing (x/y/z order kept)
    np.testing.assert_allclose(portal_truth, local_truth / VOXEL_SIZE * 10.0, atol=1e-6)


def kind_from_metadata(meta) -> str | None:
    """A portal tomogram's kind from its metadata, as the portal describes it."""
    if meta.reconstruction_method != "WBP":
        return None
    if meta.processing == "denoised":
        return "denoised"
    return "ctfdeconvolved" if meta.ctf_corrected else "wbp"


def test_the_portals_names_alone_give_the_kind_its_metadata_gives(portal):
    """A portal project synced to disk keeps only the names: they must decide as the metadata would."""
    _, config, _ = portal
    tomograms = [t for run in open_project(config).runs for t in run.voxel_spacings[0].tomograms]
    assert len(tomograms) == 12
    for tomogram in tomograms:
        assert kind_of(tomogram.tomo_type) == kind_from_metadata(tomogram.meta.portal_metadata.portal_metadata)


def pick_args(soup) -> list[str]:
    return ["--soup", str(soup), "--window", "32", "--amp", "none", "--device", "cpu"]


@pytest.fixture(scope="module")
def picked(portal, soup) -> str:
    """Every portal run picked once with the test soup (user copick-soup, session 0); what pick said."""
    _, config, _ = portal
    result = CliRunner().invoke(main, ["pick", "-c", str(config), *pick_args(soup)])
    assert result.exit_code == 0, result.output
    return result.output


def test_pick_reads_every_member_by_the_portals_names_and_writes_under_its_object_names(portal, soup, picked):
    local, config, _ = portal
    assert "  apo-ferritin -> ferritin-complex (by identifier GO:0070288)" in picked
    assert "reads 'wbp-denoised-denoiset-ctfdeconv' (also of its kind: wbp-denoised-isonet)" in picked
    assert "reads 'wbp-raw'" in picked and "reads 'wbp-filtered-ctfdeconv'" in picked
    assert "left out" not in picked
    assert CliRunner().invoke(main, ["pick", "-c", str(local), *pick_args(soup)]).exit_code == 0
    root, source = open_project(config), open_project(local)
    pairs = {"apo-ferritin": "ferritin-complex", "thyroglobulin": "thyroglobulin-1", "ribosome": "cytosolic-ribosome"}
    total = 0
    for portal_run, local_run in PORTAL_RUNS.items():
        got = read_picks(root.get_run(portal_run), list(pairs.values()), "copick-soup", "0")
        want = read_picks(source.get_run(local_run), list(pairs), "copick-soup", "0")
        for ours, theirs in pairs.items():
            # the same voxels (10.000 and 10.012 Å are within 0.5%: no resampling), placed with the run's own spacing
            np.testing.assert_allclose(got[theirs], want[ours] * 10.0 / VOXEL_SIZE, atol=1e-3)
            total += len(got[theirs])
    assert total > 0


def test_score_on_portal_ground_truth_equals_the_same_points_under_one_session(portal, picked):
    _, config, _ = portal
    root = open_project(config)
    names = [o.name for o in root.pickable_objects]
    for run in root.runs:  # the portal's annotations, copied as they are under one user and session
        for name, points in read_picks(run, names, "data-portal", "*").items():
            run.new_picks(name, "0", "copy").from_numpy(points) if len(points) else None

    def score(*reference):
        done = CliRunner().invoke(main, ["score", "-c", str(config), *reference, "--candidate-user", "copick-soup",
                                         "--json"])
        assert done.exit_code == 0, done.output
        return json.loads(done.output)

    portal_score, copy_score = score("--reference-user", "data-portal/*"), score("--reference-user", "copy")
    assert portal_score == copy_score
    assert sum(c["tp"] for c in portal_score["classes"].values()) > 0


def test_a_portal_answering_503_is_retried_then_a_one_line_error(portal, soup, tmp_path, monkeypatch):
    import functools

    from copick.impl import cryoet_data_portal

    _, config, server = portal
    # copick's own retries, as many, without its pauses (1, 2 and 4 s, each plus up to 1 s): 10 s of waiting
    quick = functools.partial(cryoet_data_portal._retry_portal_call, base_delay=0.01, max_delay=0.01)
    monkeypatch.setattr(cryoet_data_portal, "_retry_portal_call", quick)
    server.fail_next = 2  # a brief outage: the client's own retries ride it out
    assert len(open_project(config).runs) == 3
    server.fail_next, before = 10**6, server.queries
    try:
        result = CliRunner().invoke(main, ["pick", "-c", str(config), "--soup", soup, "--user-id", "outage"])
    finally:
        server.fail_next = 0
    assert result.exit_code == 1
    error = result.output.splitlines()[-1]  # after copick's own retry warnings
    assert error.startswith(f"Error: {config}: cannot reach the CZ cryoET Data Portal") and "503" in error
    assert 1 < server.queries - before <= 16  # bounded: 4 attempts by copick, each tried 4 times by urllib3
    assert not list((config.parent / config.stem).glob("ExperimentRuns/*/Picks/outage_*"))


def test_a_portal_that_does_not_answer_in_time_is_a_one_line_error(portal, soup, monkeypatch):
    _, config, server = portal
    monkeypatch.setenv("COPICK_SOUP_PORTAL_TIMEOUT", "2")
    server.delay = 20
    try:
        result = CliRunner().invoke(main, ["pick", "-c", str(config), "--soup", soup, "--user-id", "slow"])
    finally:
        server.delay = 0
    assert result.exit_code == 1
    assert result.output == (f"Error: {config}: the CZ cryoET Data Portal did not answer within 2 s "
                             "(COPICK_SOUP_PORTAL_TIMEOUT)\n")


def test_dataset_ids_are_looked_up_on_the_portal_within_the_timeout(portal, monkeypatch):
    from copick_soup.data.portal import portal_dataset_ids
    from copick_soup.errors import SoupError

    _, _, server = portal
    assert portal_dataset_ids([10440, 10446, 99999]) == {10440, 10446}
    monkeypatch.setenv("COPICK_SOUP_PORTAL_TIMEOUT", "1")
    server.delay = 10
    try:
        with pytest.raises(SoupError, match="looking up dataset IDs: the CZ cryoET Data Portal did not answer "
                                            "within 1 s"):
            portal_dataset_ids([10440])
    finally:
        server.delay = 0
