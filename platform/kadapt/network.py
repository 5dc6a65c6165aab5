"""Network guards shared by the connectors that fetch from hosts (web, git).

A host is checked when a source is added and again at sync (``check_public_host``). Checking a name and then
handing it to a client that resolves it again leaves a window (DNS rebinding: the name answers with a public
address for the check and a private one for the connection), so the fetches themselves are pinned too:
``public_http_client`` connects only to addresses checked at the moment of connecting, and ``git_pin_config``
tells git to use the addresses just checked and not to follow redirects.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from kadapt.errors import InvalidInput, PermissionDenied

if TYPE_CHECKING:
    import httpx

__all__ = ["check_public_host", "git_pin_config", "public_addresses", "public_http_client"]


def public_addresses(host: str, port: int | None = None) -> list[str]:
    """The addresses ``host`` resolves to, in resolver order; refused unless every one of them is public."""
    try:
        addresses = [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise InvalidInput(f"cannot resolve host {host!r}: {exc.strerror}") from None
        addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos))
    for address in addresses:
        if not address.is_global or address.is_multicast:
            raise PermissionDenied(
                f"{host} resolves to {address}, a loopback, private or reserved address; "
                "set KADAPT_ALLOW_PRIVATE_NETWORKS=true to reach intranet hosts"
            )
    return [str(address) for address in addresses]


def check_public_host(url: str, *, allow_private: bool) -> None:
    """Refuse loopback, private, link-local and reserved addresses before any connection is made."""
    host = urlparse(url).hostname
    if not host:
        raise InvalidInput(f"{url!r} has no host")
    if not allow_private:
        public_addresses(host)


def public_http_client(*, allow_private: bool, **kwargs) -> httpx.Client:
    """An ``httpx.Client`` whose every connection goes to an address checked when it is made.

    The host name is resolved once per connection, each address is checked, and the socket is opened to the
    checked address itself; TLS still verifies the certificate against the host name. A refused address is an
    ``httpx.ConnectError`` naming it, so a crawl records that page and goes on. With ``allow_private``, or when
    the environment names an HTTP proxy (``HTTPS_PROXY`` and the like: the proxy resolves and connects, so only
    the check before the fetch applies), this is a plain client.
    """
    import urllib.request

    import httpx

    if allow_private or set(urllib.request.getproxies()) & {"http", "https", "all"}:
        return httpx.Client(**kwargs)
    transport = httpx.HTTPTransport()
    # httpx has no public parameter for httpcore's network backend; the pool is the one HTTPTransport builds,
    # with the backend added
    transport._pool = _public_pool()
    return httpx.Client(transport=transport, **kwargs)


def _public_pool():
    import httpcore
    import httpx

    class PublicOnlyBackend(httpcore.SyncBackend):
        def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
            try:
                addresses = public_addresses(host, port)
            except (InvalidInput, PermissionDenied) as exc:
                raise httpcore.ConnectError(exc.message) from None
            error: Exception | None = None
            for address in addresses:
                try:
                    return super().connect_tcp(address, port, timeout, local_address, socket_options)
                except httpcore.ConnectError as exc:
                    error = exc
            assert error is not None
            raise error

        def connect_unix_socket(self, *args, **kwargs):
            raise httpcore.ConnectError("unix sockets are not reachable from a connector")

    return httpcore.ConnectionPool(ssl_context=httpx.create_ssl_context(), network_backend=PublicOnlyBackend())


def git_pin_config(url: str, *, allow_private: bool) -> dict[str, str]:
    """Git configuration (as ``GIT_CONFIG_*`` environment variables) that keeps a fetch on checked addresses.

    For an http(s) remote: ``http.curloptResolve`` pins the host to the addresses checked now, and
    ``http.followRedirects=false`` keeps git from following a redirect to a host never checked. ssh and git://
    remotes are resolved by ssh and git themselves: they are checked, not pinned. Empty with ``allow_private``.
    """
    if allow_private:
        return {}
    parsed = urlparse(url)
    settings = {"http.followRedirects": "false"}
    if parsed.scheme in ("http", "https") and parsed.hostname and not _is_address(parsed.hostname):
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        addresses = public_addresses(parsed.hostname, port)
        listed = ",".join(f"[{a}]" if ":" in a else a for a in addresses)
        settings["http.curloptResolve"] = f"{parsed.hostname}:{port}:{listed}"
    env = {"GIT_CONFIG_COUNT": str(len(settings))}
    for index, (key, value) in enumerate(settings.items()):
        env[f"GIT_CONFIG_KEY_{index}"] = key
        env[f"GIT_CONFIG_VALUE_{index}"] = value
    return env


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
