"""Throttling of failed API key attempts, per client address (the API and the console's sign-in).

After ``KADAPT_AUTH_FAILURE_LIMIT`` failed attempts within ``KADAPT_AUTH_FAILURE_WINDOW`` seconds, every
attempt from that address, with a right key or not, gets 429 with ``Retry-After`` until the window ends.
Successes never count. The counting is the ``limits`` library's fixed window over its in-memory storage:
one counter per address that failed, swept once its window has ended (as later failures come in), so
memory is bounded by the addresses that failed within about one window. IPv6 clients count per /64, the
block one subscriber usually has, so one client cannot spread its attempts over many counters.

Blocking by address rather than by key prefix is deliberate: a key's prefix is not secret (it is listed
with the keys), so blocking by prefix would let anyone lock a colleague out.
"""

from __future__ import annotations

import ipaddress
import math
import time

from limits import RateLimitItemPerSecond
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter

from kadapt.errors import KadaptError
from kadapt.settings import Settings

__all__ = ["AuthThrottle", "TooManyAuthFailures", "client_key"]


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

    def __init__(self, limit: int, window_seconds: int) -> None:
        self.limit = limit
        self.window_seconds = window_seconds
        self._item = RateLimitItemPerSecond(limit, window_seconds)
        self._limiter = FixedWindowRateLimiter(MemoryStorage())

    @classmethod
    def from_settings(cls, settings: Settings) -> AuthThrottle:
        return cls(settings.auth_failure_limit, settings.auth_failure_window)

    def retry_after(self, client: str) -> int:
        """Whole seconds until ``client``'s window ends (at least 1)."""
        reset = self._limiter.get_window_stats(self._item, "auth", client_key(client)).reset_time
        return max(1, math.ceil(reset - time.time()))

    def check(self, client: str) -> None:
        """Raise :class:`TooManyAuthFailures` while ``client`` is blocked."""
        if not self._limiter.test(self._item, "auth", client_key(client)):
            seconds = self.retry_after(client)
            raise TooManyAuthFailures(
                f"too many failed API key attempts from {client}: {self.limit} within {self.window_seconds} s "
                f"(KADAPT_AUTH_FAILURE_LIMIT); try again in {seconds} s",
                retry_after=seconds,
            )

    def failed(self, client: str) -> bool:
        """Count a failed attempt; True when this one is the attempt that blocks ``client``."""
        counted = self._limiter.hit(self._item, "auth", client_key(client))  # False once past the limit
        return counted and not self._limiter.test(self._item, "auth", client_key(client))
