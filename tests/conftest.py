"""Shared fixtures: small simulated copick projects on disk, made by the project's own simulator."""

import os

import pytest
from helpers import SMALL, SMALLER, copy_project

import copick_soup  # noqa: F401  (before anything imports torch: its CPU settings apply to the whole suite)

# Ray in tests: no auth prompt, loopback only, no usage reporting.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="session", autouse=True)
def converted_networks(tmp_path_factory):
    """One cache of OpenVINO-converted networks for the session (each shipped member is converted once, as on a
    user's machine), not the user's own ~/.cache; subprocesses and Ray workers inherit it."""
    os.environ["COPICK_SOUP_CACHE"] = str(tmp_path_factory.mktemp("copick-soup-cache"))


@pytest.fixture
def make_project(tmp_path):
    """Factory: a fresh simulated project under tmp_path; returns the path of its copick.json."""
    from copick_soup.simulate import simulate_project

    def make(name="project", **kwargs):
        kwargs.setdefault("runs", 2)
        kwargs.setdefault("shape", SMALL)
        kwargs.setdefault("crowding", 4.0)
        return simulate_project(tmp_path / name, **kwargs)

    return make


@pytest.fixture(scope="session")
def simulated(tmp_path_factory):
    """The project `make_project()` makes, simulated once for the session: tests get copies of it (`project`)."""
    from copick_soup.simulate import simulate_project

    return simulate_project(tmp_path_factory.mktemp("simulated") / "project", runs=2, shape=SMALL, crowding=4.0)


@pytest.fixture
def project(simulated, tmp_path):
    """A fresh copy of the default small project (2 runs of 64x128x128) that a test may change: copying it takes a
    fraction of the 2 s simulating it takes, and some 40 tests use one."""
    return copy_project(simulated, tmp_path / "project")


@pytest.fixture(scope="session")
def simulated_smaller(tmp_path_factory):
    """2 runs of SMALLER, simulated once for the session (tests get copies: `smaller_project`)."""
    from copick_soup.simulate import simulate_project

    return simulate_project(tmp_path_factory.mktemp("smaller") / "project", runs=2, shape=SMALLER, crowding=4.0)


@pytest.fixture
def smaller_project(simulated_smaller, tmp_path):
    """A fresh copy of the SMALLER project that a test may change."""
    return copy_project(simulated_smaller, tmp_path / "smaller")


@pytest.fixture(scope="session")
def simulated_crowded(tmp_path_factory):
    """1 run of 48x96x96 at crowding 8, simulated once for the session (tests get copies: `crowded_project`): the
    default soup picks 10 particles there, as many as on the first run of `project`, in under half the voxels."""
    from copick_soup.simulate import simulate_project

    return simulate_project(tmp_path_factory.mktemp("crowded") / "project", runs=1, shape=(48, 96, 96), crowding=8.0,
                            seed=1)


@pytest.fixture
def crowded_project(simulated_crowded, tmp_path):
    """A fresh copy of the crowded 1-run project that a test may change."""
    return copy_project(simulated_crowded, tmp_path / "crowded")


@pytest.fixture
def root(project):
    from copick_soup.data import open_project

    return open_project(project)


@pytest.fixture(scope="session")
def test_soup(tmp_path_factory):
    """A one-member (denoised) soup for tests that need any working soup."""
    from helpers import make_test_soup

    return str(make_test_soup(tmp_path_factory.mktemp("test-soup"))[1])


@pytest.fixture(scope="session")
def ray_cluster():
    """One real local Ray cluster for the test session (address="local": never joins another cluster)."""
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
