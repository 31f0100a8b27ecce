"""Members on disk: weights in safetensors, everything else in a JSON manifest next to them (manifest.py).

Nothing is ever unpickled, and the weights' SHA-256 is checked before loading, so a truncated or tampered file
is a clear error.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

from copick_soup.errors import SoupError
from copick_soup.model.int8 import int8_config, is_int8, require_nncf, with_quantisers
from copick_soup.model.manifest import MEMBER_FORMAT, MemberManifest, manifest_path
from copick_soup.model.registry import create_model


def sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_member(path, model, manifest: MemberManifest) -> Path:
    """Write `<stem>.safetensors` and `<stem>.json`; returns the manifest's path. An INT8 member's manifest also
    records where its quantisers sit (`int8.nncf`; model/int8.py)."""
    from safetensors.torch import save_file

    json_path = manifest_path(path)
    weights = json_path.with_suffix(".safetensors")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    # cloned: an INT8 member's quantisers may be shared between two places (a concatenation's inputs), and
    # safetensors stores no tensor twice under two names
    state = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(weights), metadata={"format": MEMBER_FORMAT})
    if is_int8(model):
        manifest = replace(manifest, extra={**manifest.extra,
                                            "int8": {**manifest.extra.get("int8", {}), "nncf": int8_config(model)}})
    written = replace(manifest, unet=model.config.as_dict(), weights=weights.name, sha256=sha256(weights))
    return written.write(json_path)


def check_member(path) -> MemberManifest:
    """The MemberManifest of a member written by `save_member`, its weights file checked (present, SHA-256 as
    recorded) without loading it, and NNCF present for an INT8 one: a soup checks every member up front and loads
    only those a run uses."""
    manifest = path if isinstance(path, MemberManifest) else MemberManifest.read(path)
    weights = manifest.weights_path
    if not weights.is_file():
        raise SoupError(f"{weights}: weights file missing for member {manifest.label}")
    if sha256(weights) != manifest.sha256:
        raise SoupError(f"{weights}: corrupt checkpoint (SHA-256 does not match its manifest)")
    if manifest.int8:
        require_nncf(str(manifest.path))
    return manifest


def load_member(path, device="cpu"):
    """(model in eval mode on `device`, its MemberManifest) from a member written by `save_member`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    manifest = check_member(path)
    weights = manifest.weights_path
    try:
        model = create_model(manifest.variant, **manifest.unet)
    except SoupError as err:
        raise SoupError(f"{manifest.path}: {err}") from err
    if manifest.int8:
        model = with_quantisers(model, manifest.int8["nncf"], str(manifest.path))
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


def copy_member(path, folder, float16: bool = False) -> Path:
    """Copy a member into `folder`; with `float16`, its floating-point weights are stored in half precision (half
    the size, for a soup shipped in the package; loading casts them back to float32, and heatmaps move by about
    1e-3). Returns the copy's manifest path."""
    from safetensors.torch import load_file, save_file

    manifest = MemberManifest.read(path)
    target = Path(folder) / manifest.path.name
    target.parent.mkdir(parents=True, exist_ok=True)
    weights = target.with_suffix(".safetensors")
    state = load_file(str(manifest.weights_path))
    if float16:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    save_file({k: v.contiguous() for k, v in state.items()}, str(weights), metadata={"format": MEMBER_FORMAT})
    return replace(manifest, weights=weights.name, sha256=sha256(weights)).write(target)


def main(argv=None) -> None:
    """`python -m copick_soup.model.checkpoint [--float16] FOLDER MEMBER...`: copy members (make default-soup)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m copick_soup.model.checkpoint", description=main.__doc__)
    parser.add_argument("--float16", action="store_true", help="store the weights in half precision")
    parser.add_argument("folder")
    parser.add_argument("members", nargs="+")
    args = parser.parse_args(argv)
    for member in args.members:
        print(copy_member(member, args.folder, args.float16))


if __name__ == "__main__":
    main()
