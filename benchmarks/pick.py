"""Speed and memory of `pick`'s inference against MONAI's `sliding_window_inference`, same model and precision:
per tomogram (`--cases full`, `grid`) and per network call (`--cases calls`).

MONAI runs at the settings a user of the 8th-place code would (64³ windows, overlap 0.25, Gaussian blending); ours
at `pick`'s defaults: the crop tiling (`--window auto`: windows shaped to the tomogram within --max-memory, margins
cropped, each voxel computed about once), streamed, and on a CPU the networks run by OpenVINO (`--runtime auto`;
`--runtime torch` runs them as MONAI does). `--ours-window 64` runs MONAI's 64³ cubes instead (pick's default
before the default soup's norms were fixed). Both sides run on the same tomogram with the same batch of windows per
network call (by default the one `pick` uses: 1 on a CPU, 4 on a GPU) and the same TTA views, and end with the same
peak extraction. Ours streams the input from zarr and never holds the whole C-channel heatmap; MONAI gets the
tomogram as one tensor, as its API requires.

Each engine runs in a fresh process of its own (this script again, with --child), which imports what that engine
needs, loads the model and runs the tomogram once. Memory is that whole process's peak resident memory (VmHWM:
interpreter, libraries, model, OpenVINO's compiled plans and the run), as the operating system, its OOM killer and
a Ray node's memory monitor count it, and on a GPU also the peak of torch's GPU allocations. Time is the engine's
call, its one-time set-up included (OpenVINO's conversion and compile, oneDNN's kernel selection), as a `pick` of
one run pays it. With --repeat N a case runs each engine N times (N processes each), alternating which goes
first, and keeps each engine's fastest run and highest peak.

`--cases calls` times the network calls alone: ours' predictor (as `pick` builds it for --runtime) against the one
MONAI's side runs, on the same 64³ window batch, in short blocks that alternate which goes first, so that a drift
of the machine hits both alike. A full-size run is more than 97% network calls and two runs of one engine differ by
about 5% on the 2-core CPU here; with --runtime torch a ratio near 1 in every block says a full-size difference was
noise, not a slower engine.

Models: unet3d_tiny and unet3d_medium are the default soup's trained denoised members, so heatmaps, peak counts and
the cost of the peak search are those of real picking (at the soup's thresholds). large has no trained weights in
the package: it runs with random weights, a zeroed output layer (flat heatmaps, no peaks on either side, since an
untrained network's heatmaps hold ~10^5 spurious maxima whose search would swamp the timing) and the soup's kind of
norms (fixed). `--variants none`: no network, each engine's own work alone.

Without options it is a quick check (a full-size tiny TTA 1 case, then the grid on a 96x192x192 crop; pick.md). The
tables the docs cite, as `make bench` writes them (benchmarks/README.md); on a 2-core CPU a full-size TTA 8 run of
medium or large takes one to two hours per engine:
    python benchmarks/pick.py --grid-shape full --cases grid --amp auto --tta 1 --repeat 2 --out pick-full-tta1-auto.md
    python benchmarks/pick.py --grid-shape full --cases grid --amp auto --tta 8 --variants unet3d_tiny \
        --out pick-full-tta8-auto-tiny.md    # and unet3d_medium, unet3d_large: -medium.md, -large.md
    python benchmarks/pick.py --grid-shape full --cases grid --amp auto --tta 1 --variants unet3d_tiny --batch 1 4 \
        --repeat 2 --out pick-batch.md    # why `pick` runs one window per call on a CPU
    python benchmarks/pick.py --grid-shape full --cases grid --amp auto --tta 1 --variants none --batch 1 4 \
        --repeat 3 --out pick-engine.md
    python benchmarks/pick.py --cases calls --runtime torch    # pick-calls.md
With a GPU (pick-grid-gpu.md):
    python benchmarks/pick.py --device cuda --grid-shape full --cases grid --amp auto --repeat 2
"""

from __future__ import annotations

import copick_soup  # noqa: F401  (first, as in `copick-soup pick`: its huge-page setting must precede torch)

# isort: split
import argparse
import itertools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from memory import process_peak_gb  # benchmarks/memory.py
from table import device_name, huge_pages_line, markdown, publish  # benchmarks/table.py

from copick_soup.data import open_project, open_tomogram
from copick_soup.data.tomogram import normalisation_stats
from copick_soup.device import amp_dtype, default_batch_size, precision_name
from copick_soup.ensemble import Ensemble, InferenceSettings
from copick_soup.ensemble.peaks import heatmaps_to_picks
from copick_soup.ensemble.runtimes import OpenVinoPredictor, TorchPredictor
from copick_soup.ensemble.tta import apply_view, tta_views, undo_view
from copick_soup.ensemble.windows import Source, stream_heatmaps
from copick_soup.model import create_model
from copick_soup.objects import FULL_SHAPE, VOXEL_SIZE, classes_from_root
from copick_soup.simulate import simulate_project

RESULTS = Path(__file__).parent / "results" / "pick.md"
SOUP = Ensemble.load("default")
WINDOW, OVERLAP = 64, 0.25  # MONAI's side: the settings a user of the 8th-place code runs
COMPILED = {}  # --runtime openvino: one predictor per model, precision and views, as Ensemble.predictor keeps
OURS = dict(window=None, max_memory=1.0, runtime="auto")  # ours: pick's defaults unless --ours-window ...
AMP_NAMES = {None: "none", torch.bfloat16: "bf16", torch.float16: "fp16"}
ENGINES = {}  # name -> function(model, volume, classes, views, device, amp, batch), filled below


class NoNetwork(torch.nn.Module):
    """`--variants none`: zero heatmaps at no cost, so a row times each engine's own work (reading, windows,
    blending, peaks) without a network."""

    def __init__(self, n_classes: int):
        super().__init__()
        self.n_classes = n_classes

    def forward(self, x):
        return x.new_zeros((x.shape[0], self.n_classes, *x.shape[2:]))


def bench_model(variant: str, n_classes: int, device: str):
    """The default soup's trained member of this variant, or random weights with a zeroed output layer and the
    soup's kind of norms (fixed: the same cost per window as its members)."""
    if variant == "none":
        return NoNetwork(n_classes)
    torch.manual_seed(0)
    trained = {m.manifest.variant: m.model for m in SOUP.members if m.manifest.tomo_type == "denoised"}
    norm = next(iter(trained.values())).config.norm
    model = create_model(variant, n_classes=n_classes, norm=norm)
    if variant in trained:
        model.load_state_dict(trained[variant].state_dict())
    else:
        torch.nn.init.zeros_(model.head.weight)
        torch.nn.init.zeros_(model.head.bias)
    return model.to(device).eval()


def ours_settings(device, amp, batch, tta) -> InferenceSettings:
    """`pick`'s settings for a case: its default tiling (or --ours-window), the precision, batch and TTA views
    compared (the views choose square windows where they turn the plane, as in `pick`)."""
    return InferenceSettings(window=OURS["window"], max_memory=OURS["max_memory"], batch_size=batch, device=device,
                             amp=AMP_NAMES[amp], runtime=OURS["runtime"], tta=tta)


def ours_tiling(model, shape, device, amp, batch, tta):
    config = getattr(model, "config", None) or create_model("unet3d_tiny").config  # NoNetwork: tiny's windows
    return ours_settings(device, amp, batch, tta).tiling(shape, [config])


def ours_predictor(model, settings: InferenceSettings, amp, views):
    """The predictor `pick` builds for the model: OpenVINO's (converted once a process, as `pick` does) or torch's."""
    if settings.engine == "openvino" and not isinstance(model, NoNetwork):
        key = (id(model), amp, len(views))
        if key not in COMPILED:
            COMPILED[key] = OpenVinoPredictor(model, amp, views)
        return COMPILED[key]
    return TorchPredictor(model, settings.device, amp, views=views)


def ours(model, volume, classes, views, device, amp, batch):
    settings = ours_settings(device, amp, batch, len(views))
    predictor = ours_predictor(model, settings, amp, views)
    # The peak search `pick` runs (inline on a CPU, on a worker thread beside a GPU), at the soup's thresholds;
    # the settings only choose that: the predictor above carries the precision and the TTA views.
    peaks = Ensemble("bench", [], classes, VOXEL_SIZE, SOUP.thresholds).peak_stream(volume.shape, settings)
    tiling = ours_tiling(model, volume.shape, device, amp, batch, len(views))
    for chunk in stream_heatmaps([Source(predictor, volume)], len(classes), tiling, batch, dtype=np.float16,
                                 device=device):  # as `pick` does
        peaks.add(*chunk)
    return peaks.picks()


ENGINES["ours"] = ours


def monai(model, volume, classes, views, device, amp, batch):
    from monai.inferers import sliding_window_inference

    mean, std = normalisation_stats(volume)
    x = torch.from_numpy((np.asarray(volume[:], dtype=np.float32) - mean) / std)[None, None].to(device)

    with torch.inference_mode(), torch.autocast(torch.device(device).type, dtype=amp or torch.float32,
                                                enabled=amp is not None):
        heat = sliding_window_inference(x, (WINDOW,) * 3, batch, monai_predictor(model, views), overlap=OVERLAP,
                                        mode="gaussian")
    del x
    return heatmaps_to_picks(heat[0].cpu().numpy(), classes, VOXEL_SIZE, SOUP.thresholds)


ENGINES["monai"] = monai


def monai_predictor(model, views):
    """The predictor MONAI's side runs: the mean of the model over the TTA views (autocast is the caller's)."""

    def predictor(windows):
        return sum(undo_view(model(apply_view(windows, v)), v).float() for v in views) / len(views)

    return predictor


def block_seconds(predict, x, calls: int, device: str) -> float:
    """Seconds per call over `calls` calls."""
    start = time.perf_counter()
    for _ in range(calls):
        predict(x)
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / calls


def compare_calls(model, views, device, amp, batch, args) -> dict:
    """{engine: seconds per call in each block}: ours' predictor and MONAI's on the same 64³ windows, in
    `args.blocks` blocks of `args.calls` calls each, alternating which goes first."""
    ours_call = ours_predictor(model, ours_settings(device, amp, batch, len(views)), amp, views)
    theirs = monai_predictor(model, views)

    def monai_call(x):
        with torch.inference_mode(), torch.autocast(torch.device(device).type, dtype=amp or torch.float32,
                                                    enabled=amp is not None):
            return theirs(x)

    x = torch.randn(batch, 1, WINDOW, WINDOW, WINDOW, generator=torch.Generator().manual_seed(0)).to(device)
    ours_call(x), monai_call(x)  # kernel selection, caches and OpenVINO's compile, before timing
    times = {"ours": [], "monai": []}
    for b in range(args.blocks):
        order = [("ours", ours_call), ("monai", monai_call)]
        for name, predict in order if b % 2 == 0 else order[::-1]:
            times[name].append(block_seconds(predict, x, args.calls, device))
    return times


def measure(engine: str, case: dict) -> tuple:
    """(seconds, peak host GB, peak GPU GB or None) of one run of `engine` on a case, in a fresh process."""
    cmd = [sys.executable, __file__, "--child", engine, "--case", json.dumps(case)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{engine} failed on {case}:\n{done.stderr}")
    return tuple(json.loads(done.stdout.strip().splitlines()[-1]))


def child(engine: str, case: dict) -> tuple:
    """One run of `engine` on the case's tomogram in this (fresh) process; (seconds, whole-process peak host GB,
    peak GPU GB or None)."""
    OURS.update(case["ours"])
    device, amp = case["device"], amp_dtype(case["amp"], case["device"])
    volume, classes = tomogram(tuple(case["shape"]), Path(case["data"]))
    model = bench_model(case["variant"], len(classes), device)
    cuda = torch.device(device).type == "cuda"
    start = time.perf_counter()
    ENGINES[engine](model, volume, classes, tta_views(case["tta"]), device, amp, case["batch"])
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return seconds, process_peak_gb(), torch.cuda.max_memory_allocated() / 1e9 if cuda else None


def compare(case: dict, repeat: int) -> dict:
    """Fastest of `repeat` runs of each engine (alternating which goes first), with the highest peak memory seen."""
    runs = {"ours": [], "monai": []}
    for i in range(repeat):
        order = ["ours", "monai"]
        for name in order if i % 2 == 0 else order[::-1]:
            runs[name].append(measure(name, case))
    return {name: (min(r[0] for r in rs), max(r[1] for r in rs), max(r[2] or 0 for r in rs))
            for name, rs in runs.items()}


def gb(value, cuda: bool) -> str:
    return f"{value:.2f}" if cuda else "-"


def tomogram(shape, folder: Path):
    config = folder / f"{'x'.join(map(str, shape))}" / "copick.json"
    if not config.exists():
        simulate_project(config.parent, runs=1, shape=shape, tomo_types=("denoised",))
    root = open_project(config)
    return open_tomogram(root.runs[0], VOXEL_SIZE, "denoised"), classes_from_root(root)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--grid-shape", default="96,192,192", help="Z,Y,X for the variant x TTA grid, or 'full'")
    parser.add_argument("--cases", default="all", choices=["all", "full", "grid", "calls"],
                        help="the full-size tiny / TTA 1 case, the variant x TTA grid, or both (all); calls: the "
                        "network calls alone")
    parser.add_argument("--amp", nargs="+", default=["none", "auto"],
                        help="precisions to compare (both engines under the same autocast); auto as `pick` resolves it")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each engine per case; the fastest counts")
    parser.add_argument("--variants", nargs="+", default=["unet3d_tiny", "unet3d_medium", "unet3d_large"],
                        help="variants in the grid ('none': no network, the engines' own work alone)")
    parser.add_argument("--tta", type=int, nargs="+", default=None,
                        help="TTA views (default: in the grid 1 4 8 for tiny, and for all variants on a GPU, else 1; "
                        "for calls 8)")
    parser.add_argument("--batch", type=int, nargs="+", default=None,
                        help="windows per network call, both engines (default: what `pick` uses on the device)")
    parser.add_argument("--ours-window", default="auto", help="ours: auto (the crop tiling, pick's default) or N "
                        "(N³ cubes, overlap 0.25, as MONAI)")
    parser.add_argument("--max-memory", type=float, default=1.0, help="ours: pick's --max-memory (GB)")
    parser.add_argument("--runtime", default="auto", choices=["auto", "torch", "openvino"],
                        help="ours: pick's --runtime (auto: OpenVINO on a CPU)")
    parser.add_argument("--calls", type=int, default=6, help="calls: network calls per block")
    parser.add_argument("--blocks", type=int, default=4, help="calls: blocks per predictor")
    parser.add_argument("--out", default=None, help="results file name (default pick[-CASES][-gpu].md)")
    parser.add_argument("--data", default=str(Path(tempfile.gettempdir()) / "copick-soup-bench-pick"))
    parser.add_argument("--child", default=None, choices=list(ENGINES), help=argparse.SUPPRESS)
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, json.loads(args.case))))
        return
    OURS.update(window=None if args.ours_window == "auto" else int(args.ours_window), max_memory=args.max_memory,
                runtime=args.runtime)
    if args.cases == "calls":
        network_calls(args)
    else:
        tomograms(args)


def tomograms(args) -> None:
    """Whole tomograms, one row per case, precision and batch size."""
    grid_shape = FULL_SHAPE if args.grid_shape == "full" else tuple(int(v) for v in args.grid_shape.split(","))
    cases = [(FULL_SHAPE, "unet3d_tiny", 1)] if args.cases in ("all", "full") and grid_shape != FULL_SHAPE else []
    if args.cases in ("all", "grid"):
        for variant in args.variants:
            tiny_or_gpu = variant == "unet3d_tiny" or args.device != "cpu"
            cases += [(grid_shape, variant, t) for t in args.tta or ((1, 4, 8) if tiny_or_gpu else (1,))]
    rows, cuda = [], torch.device(args.device).type == "cuda"
    precisions = list(dict.fromkeys(amp_dtype(a, args.device) for a in args.amp))
    batches = args.batch or [default_batch_size(args.device)]
    for (shape, variant, tta), amp, batch in itertools.product(cases, precisions, batches):
        tomogram(shape, Path(args.data))  # simulated here, once, before the engines' processes read it
        case = dict(shape=shape, variant=variant, tta=tta, amp=AMP_NAMES[amp], batch=batch, device=args.device,
                    data=args.data, ours=OURS)
        voxels = float(np.prod(shape))
        (t_ours, m_ours, g_ours), (t_monai, m_monai, g_monai) = compare(case, args.repeat).values()
        memory_ratio = (m_ours + g_ours) / (m_monai + g_monai)
        tiling = ours_tiling(bench_model(variant, 6, "cpu"), shape, args.device, amp, batch, tta).describe(shape)
        rows.append(f"| {'x'.join(map(str, shape))} | {variant} | {tiling} | {tta} | {batch} | {precision_name(amp)} | "
                    f"{voxels / t_ours / 1e3:.1f} | {voxels / t_monai / 1e3:.1f} | {t_monai / t_ours:.2f} | "
                    f"{m_ours:.2f} | {m_monai:.2f} | {gb(g_ours, cuda)} | {gb(g_monai, cuda)} | {memory_ratio:.2f} |")
        print(rows[-1], flush=True)
        write_table(args, rows)  # after every row: a long run that is cut short keeps what it measured
    print(write_table(args, rows))


def network_calls(args) -> None:
    """Network calls alone, one row per variant, TTA count, precision and batch size."""
    precisions = list(dict.fromkeys(amp_dtype(a, args.device) for a in args.amp))
    batches = args.batch or [default_batch_size(args.device)]
    rows = []
    for variant, tta, amp, batch in itertools.product(args.variants, args.tta or [8], precisions, batches):
        model = bench_model(variant, len(SOUP.classes), args.device)
        times = compare_calls(model, tta_views(tta), args.device, amp, batch, args)
        ratios = [m / o for o, m in zip(times["ours"], times["monai"])]
        engine = ours_settings(args.device, amp, batch, tta).engine if variant != "none" else "torch"
        rows.append(f"| {variant} | {engine} | {tta} | {batch} | {precision_name(amp)} | "
                    f"{min(times['ours']) * 1e3:.1f} | {min(times['monai']) * 1e3:.1f} | "
                    f"{min(ratios):.3f}-{max(ratios):.3f} |")
        print(rows[-1], flush=True)
        del model
        write_calls_table(args, rows)
    print(write_calls_table(args, rows))


def results_path(args) -> Path:
    cuda = torch.device(args.device).type == "cuda"
    return RESULTS.with_name(args.out or "pick" + ("" if args.cases == "all" else f"-{args.cases}")
                             + ("-gpu" if cuda else "") + ".md")


def write_table(args, rows) -> str:
    lines = [
        f"Pick inference vs MONAI sliding_window_inference ({args.device}: {device_name(args.device)}; MONAI: window "
        f"{WINDOW}, overlap {OVERLAP}, Gaussian; ours: {args.ours_window} tiling, --max-memory {args.max_memory:g}, "
        f"--runtime {args.runtime}; "
        f"{time.strftime('%Y-%m-%d')})",
        "Targets: ours at least 1.5x as fast (speed-up >= 1.5) at at most half of MONAI's peak memory (ratio <= 0.5).",
        "Both engines run under the same autocast precision in each row ('auto' is what `pick` uses by default).",
        "unet3d_tiny, unet3d_medium: the default soup's trained denoised members (real peaks); large: random weights, "
        "zeroed output layer, the soup's norms; none: no network (zero heatmaps), each engine's own work alone.",
        "Each engine in a fresh process of its own. Host GB: that process's whole peak resident memory (VmHWM: "
        "interpreter, libraries, model, compiled plans and the run), as the OOM killer counts it.",
        f"Speed: the fastest of {args.repeat} run(s) per engine, one-time set-up (OpenVINO's conversion and compile) "
        "included. Memory ratio: (host + GPU peak) ours / MONAI.",
        huge_pages_line() + " Both engines run with it.",
        "",
        *markdown(["tomogram", "model", "ours: tiling", "TTA", "batch", "precision", "ours kvox/s", "MONAI kvox/s",
                   "speed-up", "ours host GB", "MONAI host GB", "ours GPU GB", "MONAI GPU GB", "memory ratio"], rows),
    ]
    return publish(results_path(args), lines, echo=False)


def write_calls_table(args, rows) -> str:
    lines = [
        f"Per network call: pick's predictor vs MONAI's side of benchmarks/pick.py ({args.device}: "
        f"{device_name(args.device)}; window {WINDOW}; ours: --runtime {args.runtime}; {time.strftime('%Y-%m-%d')})",
        f"{args.blocks} blocks of {args.calls} calls per predictor, alternating which goes first. ms/call: the "
        "fastest block. Speed-up: MONAI's time / ours, per block (lowest-highest).",
        huge_pages_line(),
        "",
        *markdown(["model", "ours: runtime", "TTA", "batch", "precision", "ours ms/call", "MONAI ms/call",
                   "speed-up per block"], rows),
    ]
    return publish(results_path(args), lines, echo=False)


if __name__ == "__main__":
    main()
