"""Finding members: a soup manifest, a folder of members, one member, or a shipped soup by name."""

from __future__ import annotations

import json
from pathlib import Path

from copick_soup.errors import SoupError

SOUP_FORMAT = "copick-soup-soup/1"
SHIPPED = Path(__file__).resolve().parent.parent / "soups"


def shipped_soups() -> list[str]:
    return sorted(p.parent.name for p in SHIPPED.glob("*/soup.json"))


def resolve_soup_path(name_or_path) -> Path:
    """A shipped soup's name ('default') or a path -> an existing path."""
    path = Path(name_or_path)
    if path.exists():
        return path
    shipped = SHIPPED / str(name_or_path) / "soup.json"
    if shipped.exists():
        return shipped
    known = ", ".join(shipped_soups()) or "none installed"
    raise SoupError(f"{name_or_path}: no such soup or member (shipped soups: {known})")


def member_paths(name_or_path) -> list[Path]:
    """Manifest paths of the members behind a soup name, soup manifest, member folder or member manifest."""
    path = resolve_soup_path(name_or_path)
    if path.is_dir():
        if (path / "soup.json").exists():
            return member_paths(path / "soup.json")
        members = [p for p in sorted(path.glob("*.json")) if _format(p) == "copick-soup-member/1"]
        if not members:
            raise SoupError(f"{path}: no members (no *.json member manifests) in this folder")
        return members
    fmt = _format(path)
    if fmt == SOUP_FORMAT:
        soup = json.loads(path.read_text())
        return [path.parent / m["path"] for m in soup["members"]]
    if fmt == "copick-soup-member/1":
        return [path]
    raise SoupError(f"{path}: neither a soup nor a member manifest")


def _format(path: Path):
    try:
        return json.loads(Path(path).read_text()).get("format")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None
