"""Where the networks run and in what precision: the device and autocast choices every stage shares.

torch is imported inside the functions: this module sits below everything, and `copick-soup --help` or the
copick plugin's start-up must not pay for torch.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from copick_soup.errors import SoupError

AMP_CHOICES = ("auto", "none", "bf16", "fp16")


def resolve_device(name: str) -> str:
    """'auto' -> 'cuda' where torch sees a GPU, else 'cpu'; a CUDA device without CUDA is an error."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SoupError(f"--device {name}: no CUDA device is available")
    return name


def is_cpu(device) -> bool:
    return str(device).split(":")[0] == "cpu"


def amp_dtype(name: str, device: str = "cpu"):
    """The autocast dtype for an `amp` setting; 'auto' is bf16 where `device` computes it natively (CPUs whose
    flags show AVX512-BF16 or AMX, `cpu_bf16`; recent GPUs), fp16 on older GPUs, float32 (None: no autocast)
    elsewhere."""
    import torch

    dtypes = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    if name == "auto":
        if torch.device(device).type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if torch.device(device).type == "cpu" and cpu_has_bf16() else None
    if name not in dtypes:
        raise SoupError(f"amp: choose one of {', '.join(AMP_CHOICES)}, got '{name}'")
    if name == "fp16" and torch.device(device).type == "cpu" and not cpu_has_fp16():
        # Without native kernels torch falls back to a reference convolution, hundreds of times slower.
        raise SoupError("amp fp16: this CPU has no native float16 convolutions (hundreds of times slower than "
                        "float32); use auto, bf16 or none")
    return dtypes[name]


def precision_name(dtype) -> str:
    """'bfloat16', 'float16' or 'float32' for an `amp_dtype` result (None: no autocast)."""
    return str(dtype).removeprefix("torch.") if dtype is not None else "float32"


def precision_choice(amp: str, device: str = "cpu") -> str:
    """The precision an `amp` setting gives on `device`, and why, as `pick` prints it: 'bfloat16 (native on this
    CPU: avx512_bf16)', 'float32 (this CPU has no native bf16 (...))', 'float32 (--amp none)'."""
    dtype = precision_name(amp_dtype(amp, device))
    if amp != "auto":
        return f"{dtype} (--amp {amp})"
    if not is_cpu(device):
        return f"{dtype} (--amp auto on this GPU)"
    return f"{dtype} ({cpu_bf16()[1]})"


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (`cpu_bf16`)."""
    return cpu_bf16()[0]


# Instructions that compute bf16 natively: AVX512-BF16 (Cooper Lake, Zen 4 and later) or AMX (Sapphire Rapids and
# later) on x86, the BF16 extension on Arm. oneDNN's own query (torch.ops.mkldnn._is_mkldnn_bf16_supported) also
# says yes on plain AVX-512, where bf16 is emulated: there a pick took 118 s in bf16 against 65 s in float32
# (issue 48), so the CPU's flags decide, not oneDNN.
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


def cpu_bf16(cpuinfo: str | None = None) -> tuple[bool, str]:
    """(native, why): whether the CPU described by `cpuinfo` (a /proc/cpuinfo-style file; default /proc/cpuinfo,
    or $COPICK_SOUP_CPUINFO, which the tests use to fake a CPU) computes bf16 natively, and the reason in words."""
    path = cpuinfo or os.environ.get("COPICK_SOUP_CPUINFO", "/proc/cpuinfo")
    flags = cpu_flags(path)
    if flags is None:
        return False, f"not assumed native: {path} lists no CPU flags"
    native = [flag for flag in BF16_FLAGS if flag in flags]
    if native:
        return True, f"native on this CPU: {', '.join(native)}"
    return False, "this CPU has no native bf16 (no avx512_bf16 or amx_bf16 flag; --amp bf16 would emulate it)"


@functools.lru_cache
def cpu_flags(path: str) -> frozenset | None:
    """The instruction-set flags of the first CPU in a /proc/cpuinfo-style file ('flags' on x86, 'Features' on
    Arm); None where the file is missing or lists none (macOS, Windows)."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return None


def cpu_has_fp16() -> bool:
    return _onednn_supports("fp16")


def _onednn_supports(precision: str) -> bool:
    import torch

    try:
        return bool(getattr(torch.ops.mkldnn, f"_is_mkldnn_{precision}_supported")())
    except (AttributeError, RuntimeError):  # a private oneDNN query: absent from some builds
        return False


def default_batch_size(device) -> int:
    """Windows per network call unless the user says otherwise: 1 on a CPU, 4 on a GPU.

    A GPU needs several windows to fill it. One 64^3 window already keeps a CPU's cores busy, and more only add
    memory: several windows' full-resolution activations outgrow the cache, and glibc maps allocations that large
    afresh on every call (benchmarks/results/pick-batch.md)."""
    return 1 if is_cpu(device) else 4
