"""Peak resident memory of a block of code, for the benchmarks (psutil, from the `bench` extra)."""

import gc
import threading
import time

import psutil


class PeakRSS:
    """Peak resident memory above the starting level while the block runs."""

    def __enter__(self):
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
