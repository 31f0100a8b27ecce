"""The tail every benchmark shares: a markdown table, written to benchmarks/results/ and printed, and the lines of
its header that name the machine (CPU or GPU, huge pages)."""

import os
import platform
from pathlib import Path

from copick_soup.device import cpu_flags, cpu_has_bf16

KERNEL_THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def markdown(columns: list[str], rows: list[str]) -> list[str]:
    """The header, the separator and the rows of a markdown table with these column names."""
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns), *rows]


def publish(path: Path, lines: list[str], echo: bool = True) -> str:
    """Write the lines to `path` (its folder made if need be), print them unless `echo` is false (a table
    rewritten after every row), and return them as one text."""
    text = "\n".join(lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")
    if echo:
        print(text)
    return text


def cpu() -> str:
    """The CPU a table was taken on: model, architecture, cores, its bf16 ('bf16 AMX', 'bf16 AVX512-BF16, no AMX' or
    'no native bf16') and what `--amp auto` runs there (bf16 with AMX, and with AVX512-BF16 on AMD; float32 else).

    Sessions here land on different CPUs (an Intel with AMX one day, an AMD EPYC the next), and `--amp auto`
    resolves to bf16 on one and float32 on the other, so a table that names only the architecture cannot be
    compared with another."""
    flags = cpu_flags(os.environ.get("COPICK_SOUP_CPUINFO", "/proc/cpuinfo")) or frozenset()
    bf16 = ("bf16 AMX" if "amx_bf16" in flags else "bf16 AVX512-BF16, no AMX" if "avx512_bf16" in flags
            else "no native bf16")
    auto = "bfloat16" if cpu_has_bf16() else "float32"
    return f"{cpu_model()}, {platform.machine()}, {os.cpu_count()} cores, {bf16}, --amp auto {auto}"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def device_name(device: str) -> str:
    """The GPU's name, or the CPU's (`cpu`)."""
    import torch  # here, not at the top: benchmarks that run no network import this file too

    device = torch.device(device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu()


def kernel_thp_mode() -> str:
    """The kernel's THP mode (always, madvise or never): torch's huge-page setting needs madvise or always."""
    if not KERNEL_THP.exists():
        return "unavailable"
    text = KERNEL_THP.read_text()
    return text[text.index("[") + 1:text.index("]")] if "[" in text else text.strip()


def huge_pages_line() -> str:
    """One line for a results table's header: what this process runs with."""
    setting = os.environ.get("THP_MEM_ALLOC_ENABLE", "unset")
    return f"Huge pages for torch CPU tensors: THP_MEM_ALLOC_ENABLE={setting}, kernel THP mode {kernel_thp_mode()}."
