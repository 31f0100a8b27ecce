"""Weight-space soups: average the parameters of checkpoints of one architecture into a single member.

Fine-tunes of the same pretrained model (per fold, per seed) stay in one basin of the loss, so their averaged
weights make one model that is usually better than each of them and costs nothing extra at inference.
- uniform: the plain average of every checkpoint;
- greedy (Wortsman et al., 2022): checkpoints sorted by validation F4, each kept only if adding it to the
  average does not lower the validation F4.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

from copick_soup.errors import SoupError
from copick_soup.model.checkpoint import load_member, save_member
from copick_soup.model.manifest import MemberManifest


def average_state(models) -> dict:
    """The element-wise mean of the models' parameters and buffers (integer buffers taken from the first)."""
    states = [m.state_dict() for m in models]
    out = {}
    for key, first in states[0].items():
        if first.is_floating_point():
            out[key] = sum(s[key].float() for s in states) / len(states)
        else:
            out[key] = first.clone()
    return out


def check_same_architecture(manifests: list[MemberManifest]) -> None:
    first = manifests[0]
    for m in manifests[1:]:
        if m.unet != first.unet or m.classes != first.classes:
            raise SoupError(f"cannot average {first.label} and {m.label}: different architecture or classes")
        if m.tomo_type != first.tomo_type:
            raise SoupError(f"cannot average {first.label} ({first.tomo_type}) and {m.label} ({m.tomo_type}): "
                            f"different tomogram types")


def weight_soup(paths, out, kind: str = "uniform", score=None, echo=print) -> Path:
    """Average members into one member written to `out` (a path stem); `score(model) -> F4` drives greedy."""
    loaded = [load_member(p) for p in paths]
    check_same_architecture([m for _, m in loaded])
    if kind == "uniform":
        chosen = list(range(len(loaded)))
    elif kind == "greedy":
        if score is None:
            raise SoupError("a greedy soup needs validation runs to score candidates")
        scores = [score(model) for model, _ in loaded]
        order = sorted(range(len(loaded)), key=lambda i: -scores[i])
        chosen, best = [order[0]], scores[order[0]]
        for i in order[1:]:
            trial = copy.deepcopy(loaded[0][0])
            trial.load_state_dict(average_state([loaded[j][0] for j in chosen + [i]]))
            s = score(trial)
            echo(f"greedy soup: adding {loaded[i][1].label} gives F4 {s:.3f} (best {best:.3f})")
            if s >= best:
                chosen, best = chosen + [i], s
    else:
        raise SoupError(f"unknown weight soup '{kind}'; use uniform or greedy")
    model = copy.deepcopy(loaded[0][0])
    model.load_state_dict(average_state([loaded[i][0] for i in chosen]))
    first = loaded[0][1]
    training = dict(weight_soup=kind, ingredients=[str(loaded[i][1].path) for i in chosen],
                    candidates=[str(m.path) for _, m in loaded],
                    ingredient_training=[loaded[i][1].training for i in chosen])
    path = save_member(out, model, replace(first, training=training))
    echo(f"{kind} soup of {len(chosen)} of {len(loaded)} checkpoint(s): {path}")
    return path


def group_members(paths) -> dict:
    """{(variant, tomo type): [manifest paths]}, the groups a weight soup may average."""
    groups = {}
    for p in paths:
        m = MemberManifest.read(p)
        groups.setdefault((m.variant, m.tomo_type), []).append(Path(p))
    return groups
