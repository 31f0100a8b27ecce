"""What each Ray actor or task asks for, shared by the pick and tune jobs."""

from __future__ import annotations

import ray


def worker_resources(cpus: float | None = None) -> dict:
    """One GPU per actor or task when the cluster has GPUs, else CPUs (`cpus` each, default 1)."""
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    return dict(num_gpus=gpus, num_cpus=cpus or 1)


def limit_torch_threads() -> None:
    """On CPUs, use as many torch threads as CPUs this worker was given (Ray sets no limit of its own)."""
    import torch

    assigned = ray.get_runtime_context().get_assigned_resources()
    if not assigned.get("GPU"):
        torch.set_num_threads(max(int(assigned.get("CPU", 1)), 1))
