"""Resumable training state without pickle: tensors in safetensors, the rest in JSON."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from copick_soup.errors import SoupError


def save_state(path: Path, model, ema, optimizer, step: int, extra: dict) -> None:
    """Write `<path>.safetensors` + `<path>.json`, replacing any earlier state atomically."""
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{k}": v.detach().contiguous().cpu() for k, v in ema.state_dict().items()})
    opt = optimizer.state_dict()
    for index, values in opt["state"].items():
        for key, value in values.items():
            tensors[f"optim.{index}.{key}"] = torch.as_tensor(value).detach().contiguous().cpu()
    tensors["rng.torch"] = torch.get_rng_state()
    meta = dict(step=step, param_groups=opt["param_groups"], has_ema=ema is not None, **extra)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp.with_suffix(".safetensors")))
    tmp.with_suffix(".json").write_text(json.dumps(meta, indent=2))
    tmp.with_suffix(".safetensors").replace(path.with_suffix(".safetensors"))
    tmp.with_suffix(".json").replace(path.with_suffix(".json"))


def load_state(path: Path, model, ema, optimizer) -> dict:
    """Restore what `save_state` wrote; returns its JSON (step, history, config ...)."""
    from safetensors.torch import load_file

    json_path = path.with_suffix(".json")
    if not json_path.exists():
        raise SoupError(f"{json_path}: no training state to resume from")
    meta = json.loads(json_path.read_text())
    tensors = load_file(str(path.with_suffix(".safetensors")))
    try:
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        if ema is not None and meta["has_ema"]:
            ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
    except RuntimeError as err:
        raise SoupError(f"{json_path}: checkpoint does not fit this model ({str(err).splitlines()[0]})") from err
    state = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict(dict(state=state, param_groups=meta["param_groups"]))
    torch.set_rng_state(tensors["rng.torch"])
    return meta
