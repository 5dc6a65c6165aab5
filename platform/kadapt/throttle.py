"""Throttling of failed API key attempts, per client address (the API and the console's sign-in).

After ``KADAPT_AUTH_FAILURE_LIMIT`` failed attempts within ``KADAPT_AUTH_FAILURE_WINDOW`` seconds, every
attempt from that address, with a right key or not, gets 429 with ``Retry-After`` until the window ends.
Successes never count. The counting is the ``limits`` library's fixed window over the storage named by
``KADAPT_AUTH_FAILURE_STORAGE``: ``memory://`` (the default) counts in the server process, one counter per
address that failed, swept once its window has ended, so memory is bounded by the addresses that failed
within about one window; ``redis://host:port/db`` shares the count among every API replica. When the shared
storage cannot be reached, the process counts in memory meanwhile (logged): an outage neither fails sign-ins
nor lifts the throttle. IPv6 clients count per /64, the block one subscriber usually has, so one client
cannot spread its attempts over many counters.

Blocking by address rather than by key prefix is deliberate: a key's prefix is not secret (it is listed
with the keys), so blocking by prefix would let anyone lock a colleague out.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from urllib.parse import urlparse

from limits import RateLimitItemPerSecond
from limits.errors import ConfigurationError, StorageError
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import FixedWindowRateLimiter

from kadapt.errors import InvalidInput, KadaptError
from kadapt.settings import Settings, mask_url

__all__ = ["AuthThrottle", "TooManyAuthFailures", "client_key"]

log = logging.getLogger(__name__)


class TooManyAuthFailures(KadaptError):
    status_code = 429
    code = "too_many_auth_failures"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


def client_key(address: str | None) -> str:
    """What failures are counted under: the address, or its /64 network for IPv6."""
    if not address:
        return "unknown"
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address  # not an IP (a test client, a unix socket): counted as given
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return str(parsed)


class AuthThrottle:
    """Counts failed key attempts per client and refuses a client over the limit."""

    def __init__(self, limit: int, window_seconds: int, storage: str = "memory://") -> None:
        self.limit = limit
        self.window_seconds = window_seconds
        self.storage = storage
        self._item = RateLimitItemPerSecond(limit, window_seconds)
        self._limiter = FixedWindowRateLimiter(_open_storage(storage))
        self._local = self._limiter if storage.startswith("memory://") else FixedWindowRateLimiter(MemoryStorage())
        self._warned = False

    @classmethod
    def from_settings(cls, settings: Settings) -> AuthThrottle:
        return cls(settings.auth_failure_limit, settings.auth_failure_window, settings.auth_failure_storage)

    def _call(self, method: str, client: str):
        """Run a limiter method on the shared storage, or on the process's own count while it is unreachable."""
        key = client_key(client)
        try:
            return getattr(self._limiter, method)(self._item, "auth", key)
        except StorageError as exc:
            if not self._warned:
                log.warning(
                    "auth failure storage %s unreachable (%s); counting in this process", mask_url(self.storage), exc
                )
                self._warned = True
            return getattr(self._local, method)(self._item, "auth", key)

    def retry_after(self, client: str) -> int:
        """Whole seconds until ``client``'s window ends (at least 1)."""
        reset = self._call("get_window_stats", client).reset_time
        return max(1, math.ceil(reset - time.time()))

    def check(self, client: str) -> None:
        """Raise :class:`TooManyAuthFailures` while ``client`` is blocked."""
        if not self._call("test", client):
            seconds = self.retry_after(client)
            raise TooManyAuthFailures(
                f"too many failed API key attempts from {client}: {self.limit} within {self.window_seconds} s "
                f"(KADAPT_AUTH_FAILURE_LIMIT); try again in {seconds} s",
                retry_after=seconds,
            )

    def failed(self, client: str) -> bool:
        """Count a failed attempt; True when this one is the attempt that blocks ``client``."""
        counted = self._call("hit", client)  # False once past the limit
        return counted and not self._call("test", client)


def _open_storage(uri: str):
    """The ``limits`` storage at ``uri``; a clear error for a scheme it does not know or a missing driver."""
    scheme = urlparse(uri).scheme
    options: dict = {} if scheme == "memory" else {"wrap_exceptions": True}
    if scheme in ("redis", "rediss", "redis+unix"):  # a server that is down costs each request a second at most
        options.update(socket_timeout=1.0, socket_connect_timeout=1.0)
    try:
        return storage_from_string(uri, **options)
    except ConfigurationError as exc:
        raise InvalidInput(
            f"KADAPT_AUTH_FAILURE_STORAGE={mask_url(uri)}: {exc} (use memory:// or redis://host:6379/0; "
            "redis needs pip install 'kadapt[redis]')"
        ) from None
