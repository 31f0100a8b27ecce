"""Resident memory for the benchmarks: the whole process's, as the operating system counts it (its OOM killer, a
Ray node's memory monitor), and the peak of a block of code above its starting level (psutil, `bench` extra)."""

import gc
import resource
import sys
import threading
import time
from pathlib import Path

STATUS = Path("/proc/self/status")


def status_gb(field: str) -> float:
    """A memory line of /proc/self/status in GB: VmRSS (resident now) or VmHWM (the process's peak resident)."""
    for line in STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024 / 1e9
    raise KeyError(field)


def process_peak_gb() -> float:
    """The peak resident memory of this whole process so far (interpreter, libraries, models and all): VmHWM on
    Linux, else getrusage's ru_maxrss (kB on Linux, bytes on macOS)."""
    if STATUS.exists():
        return status_gb("VmHWM")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1e9 if sys.platform == "darwin" else peak * 1024 / 1e9


def reset_peak() -> bool:
    """Start VmHWM again from the current RSS (Linux's /proc/self/clear_refs), so that the next reading is the peak
    of what runs from now; False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class PeakRSS:
    """Peak resident memory above the starting level while the block runs (a part of a process: one forward
    pass, one read); a process's own total is `process_peak_gb`."""

    def __enter__(self):
        import psutil

        gc.collect()
        self.process = psutil.Process()
        self.start = self.peak = self.process.memory_info().rss
        self.running = True
        self.thread = threading.Thread(target=self.sample, daemon=True)
        self.thread.start()
        return self

    def sample(self):
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.005)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.gb = (self.peak - self.start) / 1e9
