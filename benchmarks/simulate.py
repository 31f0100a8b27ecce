"""Time and peak memory to simulate one full-size (184x630x630) run with each engine, against the issues' targets
(the `tilt` engine: "minutes per full-size run on 2 cores").

Each case runs in a fresh process so that its peak RSS is its own. Prints a table and writes it to
benchmarks/results/simulate.md.

    python benchmarks/simulate.py [--profile experimental|simulated]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from table import cpu, markdown, publish  # benchmarks/table.py

RESULTS = Path(__file__).parent / "results" / "simulate.md"
CASES = [
    # (label, engine, shape, write to copick, target seconds, target GB)
    ("full run, in memory", "blobs", "184,630,630", False, 60.0, 4.0),
    ("full run, written to copick (3 types, 3 scales)", "blobs", "184,630,630", True, 60.0, 4.0),
    ("64x128x128 run, written to copick", "blobs", "64,128,128", True, 1.0, None),
    ("full run, in memory", "tilt", "184,630,630", False, 300.0, 6.0),
    ("full run, written to copick (3 types, 3 scales)", "tilt", "184,630,630", True, 300.0, 6.0),
    ("64x128x128 run, written to copick", "tilt", "64,128,128", True, None, None),
    # sart: issue 46's "well under a minute" for a 96x256x256 run on 2 cores
    ("full run, written to copick (3 types, 3 scales)", "sart", "184,630,630", True, None, None),
    ("96x256x256 run, written to copick", "sart", "96,256,256", True, 60.0, None),
]


def child(shape: str, write: bool, profile: str, engine: str) -> None:
    """Simulate one run and print {"seconds": ..., "peak_gb": ...} as JSON."""
    import numpy as np

    from copick_soup.objects import classes_from_objects, czii_pickable_objects
    from copick_soup.simulate import simulate_project, simulate_run
    from copick_soup.simulate.project import Engine, sart_engine, tilt_engine

    dims = tuple(int(v) for v in shape.split(","))
    start = time.perf_counter()
    if write:
        with tempfile.TemporaryDirectory() as tmp:
            simulate_project(Path(tmp) / "p", runs=1, shape=dims, profile=profile, engine=engine)
            seconds = time.perf_counter() - start
    else:
        objects = czii_pickable_objects()
        simulator = {"tilt": tilt_engine, "sart": sart_engine}.get(engine, lambda _: Engine())(objects)
        simulate_run(dims, classes_from_objects(objects), profile, np.random.default_rng(0), engine=simulator)
        seconds = time.perf_counter() - start
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # ru_maxrss is KiB on Linux
    print(json.dumps(dict(seconds=seconds, peak_gb=peak_gb)))


def measure(shape: str, write: bool, profile: str, engine: str) -> dict:
    cmd = [sys.executable, __file__, "--child", shape, "--profile", profile, "--engine", engine]
    cmd += ["--write"] if write else []
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def verdict(value, target) -> str:
    return "-" if target is None else ("yes" if value <= target else "NO")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--write", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--profile", default="experimental", choices=["simulated", "experimental"])
    parser.add_argument("--engine", default="blobs", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.write, args.profile, args.engine)

    rows = []
    for label, engine, shape, write, t_target, m_target in CASES:
        result = measure(shape, write, args.profile, engine)
        rows.append(f"| {engine} | {label} | {result['seconds']:.1f} | {t_target or '-'} | "
                    f"{verdict(result['seconds'], t_target)} | "
                    f"{result['peak_gb']:.2f} | {m_target if m_target else '-'} | "
                    f"{verdict(result['peak_gb'], m_target)} |")
    publish(RESULTS, [
        f"Simulator benchmark ({args.profile} profile), {cpu()}, "
        f"{time.strftime('%Y-%m-%d')}",
        "",
        *markdown(["engine", "case", "seconds", "target s", "met", "peak RSS GB", "target GB", "met"], rows),
    ])


if __name__ == "__main__":
    main()
