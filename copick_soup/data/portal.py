"""CZ cryoET Data Portal datasets: dataset IDs become a copick portal config whose runs copick then lists.

IDs are checked against the portal before any work starts, in one query (retried like every read), so an
unknown ID is a clear error rather than a batch that silently picks nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

from copick_soup.data.project import PORTAL, list_names
from copick_soup.data.retry import with_retries, within_portal_timeout
from copick_soup.errors import SoupError


def parse_dataset_ids(text: str) -> list[int]:
    """'10445, 10446' -> [10445, 10446]."""
    ids = []
    for part in (p.strip() for p in text.split(",")):
        if part:
            if not part.isdigit():
                raise SoupError(f"--dataset-ids: '{part}' is not a dataset ID (IDs are numbers, e.g. 10445)")
            ids.append(int(part))
    if not ids:
        raise SoupError("--dataset-ids: no dataset ID given")
    return ids


def portal_dataset_ids(ids) -> set[int]:
    """The IDs among `ids` that the portal has."""
    import cryoet_data_portal as cdp

    client = cdp.Client()
    what = "CZ cryoET Data Portal: looking up dataset IDs"

    def find():
        return cdp.Dataset.find(client, [cdp.Dataset.id._in(list(ids))])

    found = with_retries(lambda: within_portal_timeout(find, what), what)
    return {int(d.id) for d in found}


def dataset_config(config, ids: list[int], out: Path, known=portal_dataset_ids) -> Path:
    """Write a copy of a portal config restricted to dataset `ids` to `out`; unknown IDs are an error.

    `known(ids)` returns the IDs that exist (the portal by default)."""
    config = Path(config)
    try:
        data = json.loads(config.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise SoupError(f"{config}: cannot read copick config ({err})") from err
    if data.get("config_type") != PORTAL:
        raise SoupError(f"{config}: --dataset-ids needs a CZ cryoET Data Portal config (config_type '{PORTAL}'), "
                        f"not '{data.get('config_type', 'filesystem')}'")
    missing = sorted(set(ids) - set(known(ids)))
    if missing:
        raise SoupError(f"--dataset-ids: unknown dataset ID(s) {list_names(missing)} on the CZ cryoET Data Portal")
    data["dataset_ids"] = list(ids)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2))
    return out
