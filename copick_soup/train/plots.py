"""Training's log: log.csv with one row per epoch, and curve.png with loss and validation F4 against steps."""

from __future__ import annotations

import csv
from pathlib import Path


def write_log(out_dir: Path, history: list[dict]) -> None:
    import matplotlib  # deferred: matplotlib takes a second to import, and only training draws

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(dict.fromkeys(k for row in history for k in row))
    with open(out_dir / "log.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)
    steps = [h["step"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, [h["loss"] for h in history], "o-", color="tab:blue", label="train loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss", color="tab:blue")
    ax2 = ax.twinx()
    ax2.plot(steps, [h["val_f4"] for h in history], "s-", color="tab:orange", label="val F4")
    ax2.set_ylabel("validation F4", color="tab:orange")
    ax2.set_ylim(0, 1)
    fig.tight_layout()
    fig.savefig(out_dir / "curve.png", dpi=90)
    plt.close(fig)
