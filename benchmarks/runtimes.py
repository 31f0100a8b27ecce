"""Which runtime should run the U-Nets on a CPU: torch eager (float32, and bf16 autocast as `pick` runs it where
the CPU has native bf16), torch.compile, OpenVINO and ONNX Runtime, on the three variants at the windows `pick`
uses (64³ for the classic tiling, and the crop tiling's window for a 184x630x630 tomogram at the default
--max-memory).

Each runtime gets one warm-up call (for torch.compile and OpenVINO also the compile, timed apart), then the fastest
of --repeat calls counts. Agreement: the largest absolute difference from torch's float32 output, relative to that
output's largest magnitude. A runtime is adopted only if it is clearly faster on full-size picks and installs from
PyPI wheels within the two set-up commands; the table is kept either way. ONNX Runtime and onnx come with the
`bench` extra (OpenVINO is a dependency of copick-soup).

    python benchmarks/runtimes.py [--variants unet3d_tiny unet3d_medium unet3d_large] [--repeat 3]
        [--precisions auto | float32 bf16] [--runtimes "torch eager" OpenVINO] [--out results/runtimes-NAME.md]

`--precisions auto` (the default) times float32 and, where `--amp auto` would choose it on this CPU, bf16;
`--precisions float32 bf16` times bf16 on any CPU (to see whether its bf16 is worth choosing). `--training` adds
one training step per variant and precision (forward, backward and AdamW on a batch of 2 patches of 48³, as the
recipes train; torch autocast, as `train` runs it), since `amp: auto` chooses for training as `pick` does.

Prints a table and writes benchmarks/results/runtimes.md.
"""

from __future__ import annotations

import copick_soup  # noqa: F401  (first, as in `copick-soup pick`: its huge-page setting must precede torch)

# isort: split
import argparse
import copy
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from table import cpu, markdown, publish  # benchmarks/table.py

from copick_soup.device import amp_dtype
from copick_soup.ensemble import InferenceSettings
from copick_soup.ensemble.runtimes import TorchPredictor
from copick_soup.model import create_model

RESULTS = Path(__file__).parent / "results" / "runtimes.md"
FULL = (184, 630, 630)


def eager(model, shape, amp):
    predictor = TorchPredictor(model, "cpu", amp)
    return lambda x: predictor(x).numpy()


def compiled(model, shape, amp):
    compiled_model = torch.compile(model)
    predictor = TorchPredictor(compiled_model, "cpu", amp)
    return lambda x: predictor(x).numpy()


def openvino(model, shape, amp):
    import openvino as ov

    core = ov.Core()
    ov_model = ov.convert_model(model, example_input=torch.zeros((1, 1, *shape)))
    hint = {"INFERENCE_PRECISION_HINT": "bf16" if amp is not None else "f32"}
    request = core.compile_model(ov_model, "CPU", hint).create_infer_request()
    return lambda x: request.infer([x.numpy()])[0]


def onnxruntime(model, shape, amp):
    import onnxruntime as ort

    path = Path(tempfile.mkdtemp()) / "unet.onnx"
    torch.onnx.export(model, (torch.zeros((1, 1, *shape)),), str(path), input_names=["x"], output_names=["y"],
                      dynamo=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"x": x.numpy()})[0]


RUNTIMES = {"torch eager": eager, "torch.compile": compiled, "OpenVINO": openvino, "ONNX Runtime": onnxruntime}
FLOAT32_ONLY = {"ONNX Runtime"}  # its CPU provider has no bf16 convolutions


def versions(runtimes: list[str]) -> str:
    """'torch 2.13.0+cpu, OpenVINO 2026.4.1, ...': the libraries of the runtimes timed (ONNX Runtime only where it
    ran: it comes with the `bench` extra)."""
    found = [f"torch {torch.__version__}"]
    if "OpenVINO" in runtimes:
        import openvino

        found.append(f"OpenVINO {openvino.__version__}")
    if "ONNX Runtime" in runtimes:
        import onnxruntime

        found.append(f"ONNX Runtime {onnxruntime.__version__}")
    return ", ".join(found)


def training_step(model, amp):
    """One step of training a copy of `model` on a batch, in `amp` autocast (None: float32), as train/loop.py does."""
    model = copy.deepcopy(model).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(x):
        with torch.autocast("cpu", dtype=amp or torch.float32, enabled=amp is not None):
            loss = model(x).float().square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def time_calls(fn, x, repeat: int) -> float:
    best = np.inf
    for _ in range(repeat):
        start = time.perf_counter()
        fn(x)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=["unet3d_tiny", "unet3d_medium", "unet3d_large"])
    parser.add_argument("--runtimes", nargs="+", default=list(RUNTIMES))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--precisions", nargs="+", default=["auto"], choices=["auto", "float32", "bf16"])
    parser.add_argument("--training", action="store_true", help="also time a training step per precision")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.precisions == ["auto"]:
        precisions = [None, amp_dtype("auto", "cpu")]
    else:
        precisions = [torch.bfloat16 if name == "bf16" else None for name in args.precisions]
    rows = []
    for variant in args.variants:
        torch.manual_seed(0)
        model = create_model(variant, n_classes=6).eval()
        auto = InferenceSettings(window=None).tiling(FULL, [model.config]).window
        for shape in [(64, 64, 64), auto]:
            x = torch.randn(1, 1, *shape)
            with torch.inference_mode():
                reference = model(x).numpy()
            for name in args.runtimes:
                for amp in dict.fromkeys(None if name in FLOAT32_ONLY else amp for amp in precisions):
                    start = time.perf_counter()
                    try:
                        fn = RUNTIMES[name](model, shape, amp)
                        out = fn(x)  # warm-up (and for torch.compile, the compile)
                    except Exception as err:  # noqa: BLE001 - a runtime that cannot run this model is a row
                        rows.append(f"| {variant} | {'x'.join(map(str, shape))} | {name} | "
                                    f"{'bf16' if amp else 'float32'} | - | - | - | failed: {type(err).__name__} |")
                        print(rows[-1], flush=True)
                        continue
                    setup = time.perf_counter() - start
                    seconds = time_calls(fn, x, args.repeat)
                    error = np.abs(np.asarray(out, np.float32) - reference).max() / np.abs(reference).max()
                    rows.append(f"| {variant} | {'x'.join(map(str, shape))} | {name} | "
                                f"{'bf16' if amp else 'float32'} | {x.numel() / seconds / 1e6:.2f} | "
                                f"{seconds * 1e3:.0f} | {setup:.1f} | {error:.1e} |")
                    print(rows[-1], flush=True)
        if args.training:
            x = torch.randn(2, 1, 48, 48, 48)
            for amp in dict.fromkeys(precisions):
                step = training_step(model, amp)
                step(x)  # warm-up
                seconds = time_calls(step, x, args.repeat)
                rows.append(f"| {variant} | 2x48x48x48 | torch training step | {'bf16' if amp else 'float32'} | "
                            f"{x.numel() / seconds / 1e6:.2f} | {seconds * 1e3:.0f} | - | - |")
                print(rows[-1], flush=True)
    publish(args.out, [
        f"U-Net runtimes on the CPU ({cpu()}; {versions(args.runtimes)}; {time.strftime('%Y-%m-%d')})",
        f"One window per call (a training step: a batch of two patches); the fastest of {args.repeat} after a "
        "warm-up. Random weights (speed does not depend on them). Error: max |out - torch float32| / max |torch "
        "float32|.",
        "",
        *markdown(["model", "window", "runtime", "precision", "Mvox/s", "ms/call", "set-up s", "error"], rows),
    ])


if __name__ == "__main__":
    main()
