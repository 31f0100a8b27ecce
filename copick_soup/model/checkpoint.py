"""Members on disk: weights in safetensors, everything else in a JSON manifest next to them.

A manifest rebuilds its model alone: architecture name and config, classes, voxel size, tomogram type,
normalisation, target settings and training provenance travel with the weights. Nothing is ever unpickled,
and the weights' SHA-256 is checked before loading, so a truncated or tampered file is a clear error.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from copick_soup.errors import SoupError

FORMAT = "copick-soup-member/1"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest_path(path) -> Path:
    """Accept the manifest, the weights or the common stem; return the manifest's path."""
    path = Path(path)
    if path.suffix == ".json":
        return path
    if path.suffix == ".safetensors":
        return path.with_suffix(".json")
    return path.with_name(path.name + ".json")


def save_member(path, model, manifest: dict) -> Path:
    """Write `<stem>.safetensors` and `<stem>.json`; returns the manifest path."""
    from safetensors.torch import save_file

    json_path = manifest_path(path)
    weights = json_path.with_suffix(".safetensors")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(weights), metadata={"format": FORMAT})
    full = dict(manifest, format=FORMAT, weights=weights.name, sha256=sha256(weights))
    full.setdefault("architecture", {})
    full["architecture"] = dict(full["architecture"], config=model.config.as_dict())
    json_path.write_text(json.dumps(full, indent=2))
    return json_path


def read_manifest(path) -> dict:
    json_path = manifest_path(path)
    if not json_path.is_file():
        raise SoupError(f"{json_path}: no such member manifest")
    try:
        manifest = json.loads(json_path.read_text())
    except json.JSONDecodeError as err:
        raise SoupError(f"{json_path}: corrupt member manifest ({err})") from err
    if manifest.get("format") != FORMAT:
        raise SoupError(f"{json_path}: not a copick-soup member (format {manifest.get('format')!r})")
    manifest["path"] = str(json_path)
    return manifest


def load_member(path, device="cpu"):
    """(model in eval mode on `device`, manifest) from a member written by `save_member`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from copick_soup.model import create_model

    manifest = read_manifest(path)
    json_path = Path(manifest["path"])
    weights = json_path.with_name(manifest["weights"])
    if not weights.is_file():
        raise SoupError(f"{weights}: weights file missing for member {json_path.name}")
    if sha256(weights) != manifest["sha256"]:
        raise SoupError(f"{weights}: corrupt checkpoint (SHA-256 does not match its manifest)")
    arch = manifest["architecture"]
    model = create_model(arch["name"], **arch["config"])
    try:
        state = load_file(str(weights))
    except SafetensorError as err:
        raise SoupError(f"{weights}: corrupt checkpoint ({err})") from err
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise SoupError(f"{weights}: weights do not fit architecture {arch['name']} ({first})") from err
    return model.to(device).eval(), manifest
