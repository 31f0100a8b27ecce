"""What runs one member's network on a batch of windows: torch (`TorchPredictor`) or OpenVINO on a CPU
(`OpenVinoPredictor`), each averaging the TTA views (`mean_over_views`).

A predictor is the `predict_batch` of a `windows.Source`: it takes a (B, 1, wz, wy, wx) float32 torch tensor and
returns (B, C, wz, wy, wx) float32. `Ensemble.predictor` chooses one per member (`--runtime`); the streaming in
windows.py never knows which.
"""

from __future__ import annotations

import copy
import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np

from copick_soup.ensemble.tta import apply_view, tta_views, undo_view

MODEL_PACKAGE = Path(__file__).resolve().parents[1] / "model"  # the networks' code: part of a converted one's key


class TorchPredictor:
    """`predict_batch` for one torch model: inference mode, optional autocast, optional TTA views. Returns a
    float32 tensor on the model's device."""

    def __init__(self, model, device="cpu", amp_dtype=None, views=None):
        self.model = model if amp_dtype is None else cast_weights(model, amp_dtype)
        self.device, self.amp_dtype = device, amp_dtype
        self.views = views or tta_views(1)

    def __call__(self, batch):
        import torch

        x = torch.as_tensor(batch, device=self.device)
        device_type = torch.device(self.device).type
        with torch.inference_mode(), torch.autocast(device_type, dtype=self.amp_dtype or torch.float32,
                                                    enabled=self.amp_dtype is not None):
            return mean_over_views(lambda v: self.model(v).float(), x, self.views)


def mean_over_views(run, x, views):
    """The mean over TTA `views` of `run` (a network on a torch batch), each view undone before it is added."""
    total = None
    for view in views:
        y = undo_view(run(apply_view(x, view)), view)
        total = y if total is None else total.add_(y)
    if len(views) > 1:
        total /= len(views)
    return total


class OpenVinoPredictor:
    """`predict_batch` for one torch model run by OpenVINO on the CPU (`--runtime openvino`): the model is
    converted once, compiled once per window shape, in bf16 where `amp` gives bf16 (auto: where the CPU's flags
    show it native and faster: AMX, device.cpu_bf16), else float32. Takes and returns torch tensors on the CPU, as
    `TorchPredictor` does.

    A compiled shape holds its working memory (every activation of a window: 0.3 GB for unet3d_medium at
    128x96x96) from its first call until `release`; the stream releases each member's after its call when
    several members run, so that they take turns holding one. At most KEEP_SHAPES compiled shapes are kept (a
    run needs one, or two where a last batch is short); an older one is dropped, weights, kernels and all."""

    KEEP_SHAPES = 2

    def __init__(self, model, amp_dtype=None, views=None, weights_sha256: str = ""):
        import openvino as ov

        self.core = ov.Core()
        self.model = converted(self.core, model, weights_sha256)
        self.precision = "bf16" if amp_dtype is not None else "f32"
        self.views = views or tta_views(1)
        self.compiled = {}

    def run(self, x):
        import torch

        key = tuple(x.shape)
        if key not in self.compiled:
            static = self.model.clone()
            static.reshape({0: list(key)})
            # as many threads as torch may use (a Ray actor sets that to its CPUs), not every core of the machine
            config = {"INFERENCE_PRECISION_HINT": self.precision, "INFERENCE_NUM_THREADS": torch.get_num_threads()}
            while len(self.compiled) >= self.KEEP_SHAPES:
                del self.compiled[next(iter(self.compiled))]  # the oldest shape: another run's
            self.compiled[key] = self.core.compile_model(static, "CPU", config)
        out = self.compiled[key]([np.ascontiguousarray(x.numpy())])[0]
        return torch.from_numpy(np.asarray(out, dtype=np.float32))

    def release(self):
        """Free the working memory of every compiled shape (each allocates it again on its next call, for about
        1% of that call's CPU time: the page faults)."""
        for compiled in self.compiled.values():
            compiled.release_memory()

    def __call__(self, batch):
        import torch

        return mean_over_views(lambda v: self.run(v.contiguous()), torch.as_tensor(batch), self.views)


def converted(core, model, weights_sha256: str = ""):
    """`model` as an OpenVINO model with dynamic batch and window shape, read from the cache of converted networks
    where an earlier process left it, else converted from torch (about 0.7-2 s a member: 5 s of a default-soup
    pick's start) and left there. Networks without a checkpoint's `weights_sha256` (in memory, in training) are
    converted every time."""
    import openvino as ov
    import torch

    folder = converted_cache()
    key = cache_key(model, weights_sha256) if weights_sha256 and folder else None
    if key and (folder / f"{key}.xml").exists():
        try:
            return core.read_model(folder / f"{key}.xml")
        except RuntimeError:  # a damaged pair (a disk filled up): converted again and rewritten
            pass
    side = 2 * getattr(model, "divisor", 8)  # the example must leave the deepest level more than one voxel
    network = ov.convert_model(model.float().eval(), example_input=torch.zeros(1, 1, side, side, side),
                               input=[ov.PartialShape([-1, 1, -1, -1, -1])])
    if key:
        save_converted(network, folder, key)
    return network


def converted_cache() -> Path | None:
    """Where converted networks are kept: $COPICK_SOUP_CACHE/openvino, else the user's cache folder
    ($XDG_CACHE_HOME or ~/.cache)/copick-soup/openvino. COPICK_SOUP_CACHE=off (or an empty value) keeps none."""
    root = os.environ.get("COPICK_SOUP_CACHE")
    if root is None:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "copick-soup"
    elif root in ("", "off"):
        return None
    return Path(root) / "openvino"


def cache_key(model, weights_sha256: str) -> str:
    """What a converted network depends on: the weights, the architecture (its config and the source of the
    model package, so that a changed layer is converted again) and the OpenVINO version."""
    import json

    import openvino as ov

    digest = hashlib.sha256(f"{weights_sha256} {ov.__version__} ".encode())
    digest.update(json.dumps(model.config.as_dict(), sort_keys=True).encode())
    for source in sorted(MODEL_PACKAGE.glob("*.py")):
        digest.update(source.read_bytes())
    return digest.hexdigest()[:32]


def save_converted(network, folder: Path, key: str):
    """Write `network` as folder/key.xml and .bin, each renamed into place whole, so that a process reading the
    cache at the same time (another Ray actor) finds a complete pair or nothing; a cache that cannot be written
    is only slower."""
    import openvino as ov

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            ov.save_model(network, Path(tmp) / f"{key}.xml", compress_to_fp16=False)  # exact float32 weights
            os.replace(Path(tmp) / f"{key}.bin", folder / f"{key}.bin")
            os.replace(Path(tmp) / f"{key}.xml", folder / f"{key}.xml")  # last: its presence means both are there
    except OSError:
        pass


def cast_weights(model, dtype):
    """A copy of `model` whose convolution and linear weights are already in `dtype`, as autocast would cast them.

    autocast casts a weight on every call and keeps the cast only until its context closes, which here is every
    call (it must not stay open between a generator's yields): at one window per call every weight would be cast
    again for every window. Other layers (the norms) keep their float32 parameters, as under autocast, so the
    outputs are the same to the bit.
    """
    from torch import nn

    model = copy.deepcopy(model)
    for module in model.modules():
        if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
            module.to(dtype)
    return model
