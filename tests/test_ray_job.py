"""End to end as on a cluster: `ray start --head --block` as a child process, then `ray job submit`."""

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("ray")

from helpers import free_port  # noqa: E402

from copick_soup.simulate import simulate_project  # noqa: E402
from copick_soup.testing.portal_standin import PortalData, PortalServer, portal_named, publish_portal  # noqa: E402
from copick_soup.testing.s3server import S3Server  # noqa: E402

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"


@pytest.fixture(scope="module")
def portal(tmp_path_factory):
    """A local stand-in of the CZ cryoET Data Portal holding datasets 10445 and 10446 (one run each); yields the
    environment that routes copick's portal backend to it, which the Ray head (and so every job) inherits."""
    pytest.importorskip("moto")
    pytest.importorskip("trustme")
    folder = tmp_path_factory.mktemp("portal")
    # small (the README job picks with the default soup at TTA 4): what is tested is the way from the portal
    local = simulate_project(folder / "local", runs=2, shape=(32, 64, 64), crowding=8.0, seed=43)
    with S3Server() as s3:
        data = PortalData()
        publish_portal(local, s3, data, {10445: ["exp_000"], 10446: ["exp_001"]}, folder / "unused")
        with PortalServer(data, folder) as server:
            yield {**server.env, "AWS_ENDPOINT_URL_S3": s3.endpoint}


@pytest.fixture(scope="module")
def head(portal):
    """A Ray head on 127.0.0.1 with the job server; yields the dashboard address. Terminating the `--block`
    process stops every Ray process it started (never `ray stop`: that would kill other clusters too)."""
    port, dashboard = free_port(), free_port()
    env = {**os.environ, **portal, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}  # jobs' `python`: this venv's
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths have a length limit
    process = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", f"--port={port}", "--num-cpus=2", "--num-gpus=0",
         "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
         f"--temp-dir={temp}", "--disable-usage-stats",
         # the session's other cluster already holds the agents' default ports: a clash leaves no job agent
         *(f"--{name}-port={free_port()}" for name in ("dashboard-agent-listen", "dashboard-agent-grpc",
                                                        "runtime-env-agent", "metrics-export", "ray-client-server"))],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        wait_for_job_server(address, process)
        yield address
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def wait_for_job_server(address: str, process, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"ray start --head exited with {process.returncode}")
        try:
            urllib.request.urlopen(f"{address}/api/version", timeout=2)
            return
        except OSError:
            time.sleep(1)
    raise RuntimeError(f"the Ray job server at {address} did not come up in {timeout} s")


def submit(head, *args, wait=True, job_id=None):
    command = [str(BIN / "ray"), "job", "submit", f"--address={head}", f"--working-dir={REPO}"]
    command += ([] if wait else ["--no-wait"]) + ([f"--submission-id={job_id}"] if job_id else [])
    command += ["--", "python", "-m", "ray_jobs.pick", *map(str, args)]
    deadline = time.time() + 120
    while True:  # the job server answers before the node's agent that runs jobs has registered
        done = subprocess.run(command, capture_output=True, text=True, timeout=400,
                              env={**os.environ, "RAY_ADDRESS": head})
        if "No available agent to submit job" not in done.stdout + done.stderr or time.time() > deadline:
            return done
        time.sleep(2)


@pytest.mark.slow
def test_a_killed_driver_is_rerun_and_finishes_only_the_remaining_runs(head, tmp_path, test_soup):
    config = simulate_project(tmp_path / "p", runs=8, shape=(32, 96, 96), crowding=4.0, seed=24)
    runs = [f"exp_{i:03d}" for i in range(8)]
    args = ["--config", config, "--soup", test_soup, "--window", 32]
    job_id = f"killed-driver-{tmp_path.name}"
    first_job = submit(head, *args, "--actors", 1, "--report", tmp_path / "first.json", wait=False, job_id=job_id)
    assert first_job.returncode == 0
    picked = tmp_path / "p" / "overlay" / "ExperimentRuns"
    deadline = time.time() + 300
    while not list(picked.glob("*/Picks/copick-soup_0_*.json")) and time.time() < deadline:
        time.sleep(0.2)
    stop_job(head, job_id)  # kills the driver (and its actors) mid-batch
    first = {p.parts[-3] for p in picked.glob("*/Picks/copick-soup_0_*.json")}
    assert 0 < len(first) < len(runs) and not (tmp_path / "first.json").exists()
    # the rerun, with two actors: a job that picks every run (the rest of the batch) and writes its report
    job = submit(head, *args, "--actors", 2, "--report", tmp_path / "second.json")
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    report = json.loads((tmp_path / "second.json").read_text())
    done = {r["run"] for r in report["done"]}
    assert done | set(report["skipped"]) == set(runs) and not report["failed"]
    assert set(report["skipped"]) <= first and done >= set(runs) - first  # nothing finished is picked again
    for run in runs:  # every run picked, every class written
        assert len(list((picked / run / "Picks").glob("copick-soup_0_*.json"))) == 6


def stop_job(head: str, job_id: str, timeout: float = 120) -> None:
    """What `ray job stop` does, through the job server's endpoints that it calls: ask, then wait until the job has
    stopped. Without the command's start-up of seconds, in which the actor would finish runs this small."""
    urllib.request.urlopen(urllib.request.Request(f"{head}/api/jobs/{job_id}/stop", method="POST"), timeout=60)
    deadline = time.time() + timeout
    while json.load(urllib.request.urlopen(f"{head}/api/jobs/{job_id}", timeout=60))["status"] not in (
            "STOPPED", "FAILED", "SUCCEEDED"):
        assert time.time() < deadline, f"job {job_id} did not stop in {timeout} s"
        time.sleep(0.2)


def readme_portal_job() -> list[str]:
    """The README's `python -m ray_jobs.pick ... --dataset-ids ...` command (submitted with `ray job submit`)."""
    text = README.read_text()
    found = re.search(r"^ *(python -m ray_jobs\.pick -c configs/czii_portal\.json --dataset-ids (?:.*\\\n)*.*)$", text,
                      re.MULTILINE)
    assert found, "README.md has no `ray_jobs.pick -c configs/czii_portal.json --dataset-ids` example"
    return shlex.split(found.group(1).replace("\\\n", " "))


@pytest.mark.slow
def test_the_readme_portal_job_picks_every_run_with_every_member(head, tmp_path):
    """As written, against the portal stand-in. The test's own: the config's overlay, the report's path, and the
    config's objects named as a portal-made config names them (ferritin-complex, cytosolic-ribosome, ...)."""
    config = json.loads((REPO / "configs" / "czii_portal.json").read_text())
    config["overlay_root"] = f"local://{tmp_path / 'overlay'}"
    config["pickable_objects"] = portal_named(config["pickable_objects"])
    (tmp_path / "czii_portal.json").write_text(json.dumps(config))
    command = [str(tmp_path / "czii_portal.json") if a == "configs/czii_portal.json" else
               str(tmp_path / "report.json") if a == "/mnt/shared/pick-report.json" else a
               for a in readme_portal_job()]
    assert command[:3] == ["python", "-m", "ray_jobs.pick"] and "--dataset-ids" in command
    job = submit(head, *command[3:])
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    assert "left out" not in job.stdout and "reads 'wbp-denoised-denoiset-ctfdeconv'" in job.stdout
    assert "apo-ferritin -> ferritin-complex (by identifier GO:0070288)" in job.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    assert sorted(r["run"] for r in report["done"]) == ["16463", "16464"] and not report["failed"]
    for run in ("16463", "16464"):  # portal runs are named by their IDs
        picks = (tmp_path / "overlay" / "ExperimentRuns" / run / "Picks").glob("copick-soup_0_*.json")
        assert sorted(p.stem.split("_")[2] for p in picks) == sorted(o["name"] for o in config["pickable_objects"])
