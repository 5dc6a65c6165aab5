"""Throttling of failed API key attempts (the API and the console's sign-in).

The key is always checked first, and a valid key is never refused: an attacker who shares an address with
colleagues (one NAT, one ingress) must not be able to lock them out, whatever prefix they send. Only failures
count, under two counters per window of ``KADAPT_AUTH_FAILURE_WINDOW`` seconds:

- (client address, presented key prefix), limit ``KADAPT_AUTH_FAILURE_LIMIT``: someone guessing one key;
- the client address alone, limit ``KADAPT_AUTH_FAILURE_ADDRESS_LIMIT``: someone rotating prefixes.

While either counter is over its limit, a wrong key from that address (with that prefix) gets 429 with
``Retry-After`` instead of 401, and is not counted further. This does not slow a guesser who finds the right
key, and need not: a key's secret part is 192 random bits, which no rate of guessing reaches. What the
throttle buys is a bound on the work and the noise of a guessing campaign, an ``auth.blocked`` audit event
when one starts, and a clear answer to a misconfigured client that retries in a loop.

The client address is the socket peer, or, when the peer is listed in ``KADAPT_TRUSTED_PROXIES``, the address
its ``X-Forwarded-For`` names (uvicorn's ``ProxyHeadersMiddleware``, installed by
:func:`kadapt.api.security.install_security`).

The counting is the ``limits`` library's fixed window over the storage named by
``KADAPT_AUTH_FAILURE_STORAGE``: ``memory://`` (the default) counts in the server process, one counter per
address (and prefix) that failed, swept once its window has ended, so memory is bounded by the failures of
about one window; ``redis://host:port/db`` shares the count among every API replica. When the shared storage
cannot be reached, the process counts in memory meanwhile (logged): an outage neither fails sign-ins nor lifts
the throttle. IPv6 clients count per /64, the block one subscriber usually has, so one client cannot spread
its attempts over many counters. A prefix that is not the shape kadapt issues counts as one prefix,
``malformed``.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import re
import time
from urllib.parse import urlparse

from limits import RateLimitItemPerSecond
from limits.errors import ConfigurationError, StorageError
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import FixedWindowRateLimiter

from kadapt.errors import InvalidInput, RetryLater
from kadapt.settings import Settings, mask_url

__all__ = ["AuthThrottle", "TooManyAuthFailures", "client_key", "key_prefix"]

log = logging.getLogger(__name__)


class TooManyAuthFailures(RetryLater):
    status_code = 429
    code = "too_many_auth_failures"


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


PREFIX_SHAPE = re.compile(r"[0-9a-f]{12}")


def key_prefix(key: str | None) -> str:
    """The prefix a presented key claims (``kad_<prefix>_<secret>``), or ``malformed``: what failures count under."""
    parts = (key or "").split("_", 2)
    if len(parts) == 3 and parts[0] == "kad" and PREFIX_SHAPE.fullmatch(parts[1]):
        return parts[1]
    return "malformed"


class AuthThrottle:
    """Counts failed key attempts per (client, key prefix) and per client, and refuses wrong keys over a limit."""

    def __init__(
        self, limit: int, window_seconds: int, storage: str = "memory://", *, address_limit: int | None = None
    ) -> None:
        self.limit = limit
        self.address_limit = address_limit if address_limit is not None else limit * 10
        self.window_seconds = window_seconds
        self.storage = storage
        self._pair_item = RateLimitItemPerSecond(limit, window_seconds)
        self._address_item = RateLimitItemPerSecond(self.address_limit, window_seconds)
        self._limiter = FixedWindowRateLimiter(_open_storage(storage))
        self._local = self._limiter if storage.startswith("memory://") else FixedWindowRateLimiter(MemoryStorage())
        self._warned = False

    @classmethod
    def from_settings(cls, settings: Settings) -> AuthThrottle:
        return cls(
            settings.auth_failure_limit,
            settings.auth_failure_window,
            settings.auth_failure_storage,
            address_limit=settings.auth_failure_address_limit,
        )

    def _counters(self, client: str, prefix: str) -> list[tuple[RateLimitItemPerSecond, tuple[str, ...]]]:
        address = client_key(client)
        return [(self._pair_item, ("auth", address, prefix)), (self._address_item, ("auth-address", address))]

    def _call(self, method: str, item, identifiers: tuple[str, ...]):
        """Run a limiter method on the shared storage, or on the process's own count while it is unreachable."""
        try:
            return getattr(self._limiter, method)(item, *identifiers)
        except StorageError as exc:
            if not self._warned:
                log.warning(
                    "auth failure storage %s unreachable (%s); counting in this process", mask_url(self.storage), exc
                )
                self._warned = True
            return getattr(self._local, method)(item, *identifiers)

    def _blocking(self, client: str, prefix: str) -> list[tuple[RateLimitItemPerSecond, tuple[str, ...]]]:
        return [(item, ids) for item, ids in self._counters(client, prefix) if not self._call("test", item, ids)]

    def blocked(self, client: str, prefix: str) -> TooManyAuthFailures | None:
        """The error to answer a wrong key with while ``client`` (with ``prefix``) is over a limit, else None."""
        blocking = self._blocking(client, prefix)
        if not blocking:
            return None
        seconds = max(
            max(1, math.ceil(self._call("get_window_stats", item, ids).reset_time - time.time()))
            for item, ids in blocking
        )
        if blocking[0][0] is self._pair_item:
            what = f"{self.limit} with key prefix {prefix} (KADAPT_AUTH_FAILURE_LIMIT)"
        else:
            what = f"{self.address_limit} in all (KADAPT_AUTH_FAILURE_ADDRESS_LIMIT)"
        return TooManyAuthFailures(
            f"too many failed API key attempts from {client}: {what} within {self.window_seconds} s; "
            f"check the key and try again in {seconds} s",
            retry_after=seconds,
        )

    def failed(self, client: str, prefix: str) -> bool:
        """Count a failed attempt; True when this one is the attempt that blocks ``client`` (or its prefix)."""
        newly_blocked = False
        for item, ids in self._counters(client, prefix):
            counted = self._call("hit", item, ids)  # False once past the limit
            newly_blocked |= counted and not self._call("test", item, ids)
        return newly_blocked


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
