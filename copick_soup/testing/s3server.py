"""A real S3-compatible server on 127.0.0.1 (moto's, as a child process) and a project published to it.

`publish_project` lays a simulated copick project out the way the CZ cryoET Data Portal serves data: static,
read-only, anonymously readable objects (OME-Zarr with '/' chunk keys) under a dataset prefix, while picks go to
a local overlay. Ray workers and subprocesses reach the server over TCP like any S3 endpoint: nothing is patched.
Used by the tests and by benchmarks/ray_scaling.py; moto (the `test` extra) runs only in the child process.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

BUCKET = "cryoet-data-portal-public"
CREDENTIALS = dict(key="testing", secret="testing")  # the publisher's; readers are anonymous
FAST_FAIL = {"config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2}}  # botocore gives up at once


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    """`with S3Server() as server:` a moto S3 server at server.endpoint, stopped on exit."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.process = None

    def start(self) -> S3Server:
        self.process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"moto S3 server did not start on port {self.port}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def filesystem(self):
        """An s3fs filesystem with write access; what it writes is public-read, as on the portal."""
        import s3fs

        return s3fs.S3FileSystem(**CREDENTIALS, endpoint_url=self.endpoint,
                                 s3_additional_kwargs={"ACL": "public-read"}, skip_instance_cache=True)

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def publish_project(config, server: S3Server, prefix: str, overlay: Path, endpoint_in_config: bool = True,
                    fs_args: dict | None = None) -> Path:
    """Upload a local project's runs to s3://BUCKET/PREFIX and write a copick config that reads them from there
    anonymously, with a fresh local overlay for picks. Returns the new config's path (in `overlay`'s parent).

    With `endpoint_in_config=False` the config names no endpoint: s3fs then finds the server through
    AWS_ENDPOINT_URL_S3, as copick's portal backend does."""
    config = Path(config)
    data = json.loads(config.read_text())
    local = Path(data["overlay_root"].removeprefix("local://"))
    fs = server.filesystem()
    if not fs.exists(BUCKET):
        fs.mkdir(BUCKET)
    fs.put(str(local / "ExperimentRuns"), f"{BUCKET}/{prefix}/ExperimentRuns", recursive=True)
    static_args = dict(anon=True, **(fs_args or {}))
    if endpoint_in_config:
        static_args["endpoint_url"] = server.endpoint
    data.update(static_root=f"s3://{BUCKET}/{prefix}", static_fs_args=static_args,
                overlay_root=f"local://{overlay}", overlay_fs_args={"auto_mkdir": True})
    overlay.mkdir(parents=True, exist_ok=True)
    out = overlay.parent / f"{overlay.name}.json"
    out.write_text(json.dumps(data, indent=2))
    return out
