"""Picking from a real local S3 server (moto, 127.0.0.1) that serves a project laid out like the portal."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("moto")

from helpers import copy_project, free_port  # noqa: E402

from copick_soup.data import open_project, open_tomogram, read_picks  # noqa: E402
from copick_soup.ensemble import Ensemble, InferenceSettings  # noqa: E402
from copick_soup.objects import VOXEL_SIZE  # noqa: E402
from copick_soup.pick import PickOptions, pick_runs  # noqa: E402
from copick_soup.testing.s3server import BUCKET, FAST_FAIL, S3Server, publish_project  # noqa: E402

W32 = InferenceSettings(window=32)

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def server():
    with S3Server() as s:
        yield s


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """A 2-run project, simulated once for the module (tests get copies)."""
    from copick_soup.simulate import simulate_project

    return simulate_project(tmp_path_factory.mktemp("two") / "p", runs=2, shape=(32, 64, 64), crowding=10.0, seed=31)


@pytest.fixture
def s3_project(two_runs, server, tmp_path):
    """(local config, the same project served from S3 with its own overlay, S3 prefix)."""
    local = copy_project(two_runs, tmp_path / "project")
    prefix = f"{tmp_path.name}/10440"
    return local, publish_project(local, server, prefix, tmp_path / "overlay", fs_args=FAST_FAIL), prefix


def test_a_project_on_s3_is_laid_out_like_the_portal_and_reads_like_the_local_copy(s3_project, server):
    local, remote, prefix = s3_project
    fs = server.filesystem()
    keys = fs.find(f"{BUCKET}/{prefix}/ExperimentRuns/exp_000/VoxelSpacing10.012/denoised.zarr")
    assert any(k.endswith("denoised.zarr/0/0/0/0") for k in keys)  # OME-Zarr with '/' chunk keys
    a, b = open_project(local).runs[0], open_project(remote).runs[0]
    np.testing.assert_array_equal(open_tomogram(a, VOXEL_SIZE, "denoised")[:], open_tomogram(b, VOXEL_SIZE,
                                                                                            "denoised")[:])
    names = [o.name for o in open_project(local).pickable_objects]
    truth_a, truth_b = read_picks(a, names, "curation", "0"), read_picks(b, names, "curation", "0")
    assert sum(len(p) for p in truth_b.values()) > 0  # ground truth is read from S3 too
    for name in names:
        np.testing.assert_array_equal(truth_a[name], truth_b[name])


def test_picks_from_s3_equal_picks_from_local_disk_and_land_in_the_overlay(s3_project, test_soup, tmp_path):
    local, remote, _ = s3_project
    soup = Ensemble.load(test_soup)
    options = PickOptions(user_id="s3", session_id="0")
    got = {}
    for name, config in (("local", local), ("s3", remote)):
        results = pick_runs(open_project(config), soup, None, W32, options, echo=lambda m: None)
        assert all(r["processed"] for r in results), results
        root = open_project(config)
        got[name] = [read_picks(run, [c.name for c in soup.classes], "s3", "0") for run in root.runs]
    assert sum(len(p) for run in got["s3"] for p in run.values()) > 0
    for a, b in zip(got["local"], got["s3"]):
        for name in a:
            np.testing.assert_allclose(a[name], b[name])
    assert list((tmp_path / "overlay" / "ExperimentRuns" / "exp_000" / "Picks").glob("s3_0_*.json"))


def test_a_missing_object_fails_its_run_after_bounded_retries_and_the_batch_goes_on(s3_project, test_soup, server):
    _, remote, prefix = s3_project
    server.filesystem().rm(f"{BUCKET}/{prefix}/ExperimentRuns/exp_000/VoxelSpacing10.012/denoised.zarr/0/.zarray")
    messages = []
    results = pick_runs(open_project(remote), Ensemble.load(test_soup), None, W32, PickOptions(user_id="s3"),
                        echo=messages.append)
    failed = {r["run"]: r["error"] for r in results if not r["processed"]}
    assert list(failed) == ["exp_000"] and "failed after 3 attempt(s)" in failed["exp_000"]
    assert "tomogram 'denoised'" in failed["exp_000"]
    assert [r["run"] for r in results if r["processed"]] == ["exp_001"]


def test_missing_chunks_are_an_error_not_zeros(s3_project, test_soup, server):
    _, remote, prefix = s3_project
    fs = server.filesystem()
    store = f"{BUCKET}/{prefix}/ExperimentRuns/exp_001/VoxelSpacing10.012/denoised.zarr/0"
    fs.rm([k for k in fs.find(store) if not k.endswith((".zarray", ".zattrs"))])  # zarr would read zeros
    results = pick_runs(open_project(remote), Ensemble.load(test_soup), ["exp_001"], W32, echo=lambda m: None)
    assert not results[0]["processed"] and "is constant" in results[0]["error"]


def run_cli(*args, env=None):
    return subprocess.run([str(BIN / "copick-soup"), *map(str, args)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COPICK_SOUP_IO_ATTEMPTS": "2", **(env or {})})


def test_aws_endpoint_url_s3_redirects_an_anonymous_config_as_for_the_portal(make_project, server, test_soup,
                                                                                tmp_path):
    local = make_project(runs=1, shape=(32, 64, 64), crowding=10.0, seed=32)
    remote = publish_project(local, server, f"{tmp_path.name}/env", tmp_path / "overlay", endpoint_in_config=False)
    done = run_cli("pick", "-c", remote, "--soup", test_soup, "--window", 32,
                   env={"AWS_ENDPOINT_URL_S3": server.endpoint})
    assert done.returncode == 0, done.stderr
    picks = list((tmp_path / "overlay" / "ExperimentRuns" / "exp_000" / "Picks").glob("copick-soup_0_*.json"))
    assert len(picks) == 6  # one file per class, in the local overlay


def test_unreachable_s3_is_a_one_line_error_after_bounded_retries(make_project, server, test_soup, tmp_path):
    local = make_project(runs=1, shape=(32, 64, 64), crowding=10.0, seed=33)
    remote = publish_project(local, server, f"{tmp_path.name}/gone", tmp_path / "overlay", endpoint_in_config=False,
                             fs_args=FAST_FAIL)
    done = run_cli("pick", "-c", remote, "--soup", test_soup,
                   env={"AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{free_port()}"})  # nothing listens there
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert "listing runs: failed after 2 attempt(s)" in last and "Traceback" not in done.stderr
