"""Bounded retries for reads from object stores (S3, the CZ cryoET Data Portal), which fail now and then.

`IO_ATTEMPTS` (env COPICK_SOUP_IO_ATTEMPTS) attempts with a doubling pause; then the read fails as a SoupError
that names what was read and the last reason, so a batch records the run as failed and goes on. Only transport
errors are retried: a chunk that fails to decode is corrupt and stays corrupt, and blosc's decoder is not safe
to call again after an error on corrupt input (numcodecs#228, numcodecs#81: the second try can crash the process),
so it fails at once.
"""

from __future__ import annotations

import os
import threading
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
            if not is_transport_error(err):
                reason = str(err).splitlines()[0] if str(err) else type(err).__name__
                raise SoupError(f"{what}: unreadable data ({type(err).__name__}: {reason}); not retried") from err
            if attempt == attempts:
                reason = str(err).splitlines()[0] if str(err) else type(err).__name__
                raise SoupError(f"{what}: failed after {attempts} attempt(s) ({type(err).__name__}: {reason})") \
                    from err
            time.sleep(IO_BACKOFF * 2 ** (attempt - 1))


TRANSPORT_MODULES = ("aiohttp", "botocore", "s3fs", "fsspec", "urllib3", "requests", "gql")


def is_transport_error(err: BaseException) -> bool:
    """Could trying again help? Network and storage errors (OSError, timeouts, the HTTP and S3 clients' own), yes;
    anything else (a decoder's error on corrupt bytes, a bad array), no."""
    if isinstance(err, (OSError, TimeoutError, ConnectionError, KeyError)):  # KeyError: a store's missing object
        return True
    return any(type(e).__module__.split(".")[0] in TRANSPORT_MODULES for e in (err, err.__cause__, err.__context__)
               if e is not None)


def within_portal_timeout(call, what: str):
    """call() that gives up after COPICK_SOUP_PORTAL_TIMEOUT seconds (600 by default: opening a dataset of hundreds
    of runs takes minutes): the CZ cryoET Data Portal's GraphQL client waits for an answer without end. The call
    runs in a daemon thread, so a request that never returns does not keep the process alive."""
    timeout = float(os.environ.get("COPICK_SOUP_PORTAL_TIMEOUT", 600))
    outcome = {}

    def run():
        try:
            outcome["value"] = call()
        except BaseException as err:  # noqa: BLE001 - raised again in the caller's thread
            outcome["error"] = err

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise SoupError(f"{what}: the CZ cryoET Data Portal did not answer within {timeout:g} s "
                        "(COPICK_SOUP_PORTAL_TIMEOUT)")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
