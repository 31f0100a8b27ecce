"""Where the networks run and in what precision: the device and autocast choices every stage shares.

torch is imported inside the functions: this module sits below everything, and `copick-soup --help` or the
copick plugin's start-up must not pay for torch.
"""

from __future__ import annotations

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
    """The autocast dtype for an `amp` setting; 'auto' is bf16 where `device` computes it natively (CPUs with
    AVX512-BF16 or AMX; recent GPUs), fp16 on older GPUs, float32 (None: no autocast) elsewhere."""
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


def cpu_has_bf16() -> bool:
    return _onednn_supports("bf16")


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
