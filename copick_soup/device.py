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
    """The autocast dtype for an `amp` setting; 'auto' is bf16 where `device` computes it natively and faster
    (CPUs with AMX, `cpu_bf16`; recent GPUs), fp16 on older GPUs, float32 (None: no autocast) elsewhere."""
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
    CPU: amx_bf16)', 'float32 (avx512_bf16 without AMX: ...)', 'float32 (--amp none)'."""
    dtype = precision_name(amp_dtype(amp, device))
    if amp != "auto":
        return f"{dtype} (--amp {amp})"
    if not is_cpu(device):
        return f"{dtype} (--amp auto on this GPU)"
    return f"{dtype} ({cpu_bf16()[1]})"


def cpu_has_bf16() -> bool:
    """Whether `--amp auto` runs bf16 on this CPU (`cpu_bf16`)."""
    return cpu_bf16()[0]


# bf16 by default only where it was measured faster than float32, one window of each U-Net on each runtime:
# - AMX (Intel Sapphire Rapids and later): a 64³ window of the tiny U-Net 2.4x (OpenVINO) to 3x (torch) faster
#   (benchmarks/results/runtimes.md);
# - AVX512-BF16 on AMD (Zen 4 and later): 1.9-2.2x (OpenVINO) and 2.0-2.7x (torch) for the tiny and medium U-Nets
#   (benchmarks/results/runtimes-zen4.md, an EPYC of family 25);
# but not AVX512-BF16 on an Intel without AMX (Cooper Lake, Xeons whose AMX a hypervisor hides): there, quiet, bf16
# ran at 0.56-0.78x float32's speed with OpenVINO and 0.80-1.05x with torch (docs/decisions.md). The same flag, the
# opposite answer: so the vendor decides with the flags.
# oneDNN's own query says yes even on plain AVX-512, where bf16 is emulated (a pick 118 s in bf16 against 65 s, issue
# 48), so it is not asked. Arm's BF16 extension is not measured here: float32 there until it is.
def cpu_bf16(cpuinfo: str | None = None) -> tuple[bool, str]:
    """(bf16, why): whether `--amp auto` runs bf16 on the CPU described by `cpuinfo` (a /proc/cpuinfo-style file;
    default /proc/cpuinfo, or $COPICK_SOUP_CPUINFO, which the tests use to fake a CPU), and the reason in words."""
    path = cpuinfo or os.environ.get("COPICK_SOUP_CPUINFO", "/proc/cpuinfo")
    flags = cpu_flags(path)
    if flags is None:
        return False, f"not assumed native: {path} lists no CPU flags"
    if "amx_bf16" in flags:
        return True, "native on this CPU: amx_bf16"
    if "avx512_bf16" in flags and cpu_vendor(path) == "AuthenticAMD":
        return True, "native on this CPU: avx512_bf16 on AMD, 2x float32's speed there"
    if "avx512_bf16" in flags:
        return False, "avx512_bf16 without AMX: bf16 ran no faster than float32 on such a CPU; --amp bf16 to use it"
    if "bf16" in flags:
        return False, "Arm's bf16 is not measured here; --amp bf16 to use it"
    return False, "this CPU has no native bf16 (no amx_bf16 or avx512_bf16 flag; --amp bf16 would emulate it)"


def cpu_flags(path: str) -> frozenset | None:
    """The instruction-set flags of the first CPU in a /proc/cpuinfo-style file ('flags' on x86, 'Features' on
    Arm); None where the file is missing or lists none (macOS, Windows)."""
    value = _cpuinfo_field(path, ("flags", "Features"))
    return frozenset(value.split()) if value is not None else None


def cpu_vendor(path: str) -> str | None:
    """'GenuineIntel', 'AuthenticAMD', ... from a /proc/cpuinfo-style file (None on Arm, which has no vendor_id)."""
    return _cpuinfo_field(path, ("vendor_id",))


@functools.lru_cache
def _cpuinfo_field(path: str, keys: tuple[str, ...]) -> str | None:
    """The first value of one of `keys` in a /proc/cpuinfo-style file, None where the file or the key is missing."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() in keys:
            return value.strip()
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
