"""Bounded retries for reads from object stores (S3, the CZ cryoET Data Portal), which fail now and then.

`IO_ATTEMPTS` (env COPICK_SOUP_IO_ATTEMPTS) attempts with a doubling pause; then the read fails as a SoupError
that names what was read and the last reason, so a batch records the run as failed and goes on.
"""

from __future__ import annotations

import os
import time

from copick_soup.errors import SoupError

IO_ATTEMPTS = int(os.environ.get("COPICK_SOUP_IO_ATTEMPTS", 3))
IO_BACKOFF = 0.5  # seconds before the second attempt, doubled after each failure


def with_retries(read, what: str, attempts: int | None = None):
    """read() with bounded retries; the last failure becomes a SoupError naming `what` and the reason."""
    attempts = attempts or IO_ATTEMPTS
    for attempt in range(1, attempts + 1):
        try:
            return read()
        except SoupError:
            raise
        except Exception as err:  # noqa: BLE001 - s3fs, botocore, aiohttp and zarr each raise their own types
            if attempt == attempts:
                reason = str(err).splitlines()[0] if str(err) else type(err).__name__
                raise SoupError(f"{what}: failed after {attempts} attempt(s) ({type(err).__name__}: {reason})") \
                    from err
            time.sleep(IO_BACKOFF * 2 ** (attempt - 1))
