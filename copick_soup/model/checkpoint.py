"""Members on disk: weights in safetensors, everything else in a JSON manifest next to them (manifest.py).

Nothing is ever unpickled, and the weights' SHA-256 is checked before loading, so a truncated or tampered file
is a clear error.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

from copick_soup.errors import SoupError
from copick_soup.model.manifest import MEMBER_FORMAT, MemberManifest, manifest_path
from copick_soup.model.registry import create_model


def sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_member(path, model, manifest: MemberManifest) -> Path:
    """Write `<stem>.safetensors` and `<stem>.json`; returns the manifest's path."""
    from safetensors.torch import save_file

    json_path = manifest_path(path)
    weights = json_path.with_suffix(".safetensors")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(weights), metadata={"format": MEMBER_FORMAT})
    written = replace(manifest, unet=model.config.as_dict(), weights=weights.name, sha256=sha256(weights))
    return written.write(json_path)


def load_member(path, device="cpu"):
    """(model in eval mode on `device`, its MemberManifest) from a member written by `save_member`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    manifest = path if isinstance(path, MemberManifest) else MemberManifest.read(path)
    weights = manifest.weights_path
    if not weights.is_file():
        raise SoupError(f"{weights}: weights file missing for member {manifest.label}")
    if sha256(weights) != manifest.sha256:
        raise SoupError(f"{weights}: corrupt checkpoint (SHA-256 does not match its manifest)")
    model = create_model(manifest.variant, **manifest.unet)
    try:
        state = load_file(str(weights))
    except SafetensorError as err:
        raise SoupError(f"{weights}: corrupt checkpoint ({err})") from err
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise SoupError(f"{weights}: weights do not fit architecture {manifest.variant} ({first})") from err
    return model.to(device).eval(), manifest
