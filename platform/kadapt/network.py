"""Network guards shared by the connectors that fetch from hosts (web, git).

A host is checked when a source is added and again at sync (``check_public_host``). Checking a name and then
handing it to a client that resolves it again leaves a window (DNS rebinding: the name answers with a public
address for the check and a private one for the connection), so the fetches themselves are pinned too:
``public_http_client`` connects only to addresses checked at the moment of connecting, ``git_pin_config``
tells git to use the addresses just checked and not to follow redirects, and ``pin_git_remote`` does the same
for ssh and git:// remotes (ssh is told the checked address, a git:// URL names it).

An IPv6 address that carries an IPv4 one (IPv4-mapped and -compatible, NAT64 ``64:ff9b::/96``, 6to4
``2002::/16``, Teredo) is judged by the IPv4 address too: ``64:ff9b::7f00:1`` reaches 127.0.0.1 through a NAT64
gateway. A host named in a group's ``hosts`` allowance may be on a private range, never on loopback,
link-local (cloud metadata) or unspecified addresses.
"""

from __future__ import annotations

import ipaddress
import os
import shlex
import socket
from collections.abc import Collection
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from kadapt.errors import InvalidInput, PermissionDenied

if TYPE_CHECKING:
    import httpx

__all__ = [
    "check_public_host",
    "embedded_ipv4",
    "git_pin_config",
    "is_public_address",
    "pin_git_remote",
    "public_addresses",
    "public_http_client",
]

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215: a local translator, never global
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_IPV4_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")
_SITE_LOCAL = ipaddress.ip_network("fec0::/10")  # deprecated, but routed as private; Python 3.11 calls it global


def embedded_ipv4(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries and reaches through a translator or tunnel."""
    if address.version == 4:
        return []
    assert isinstance(address, ipaddress.IPv6Address)
    embedded = []
    if address.ipv4_mapped:
        embedded.append(address.ipv4_mapped)
    if address.sixtofour:
        embedded.append(address.sixtofour)
    if address.teredo:
        embedded.extend(address.teredo)  # (server, client)
    low32 = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    # :: and ::1 are not IPv4-compatible addresses
    compatible = address in _IPV4_COMPATIBLE and int(address) > 1
    if address in _NAT64 or address in _IPV4_TRANSLATED or compatible:
        embedded.append(low32)
    return embedded


def is_public_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """A globally reachable unicast address, judged by every IPv4 address it carries as well."""
    if address.version == 6 and (address in _SITE_LOCAL or address in _NAT64_LOCAL):
        return False
    return (
        address.is_global
        and not address.is_multicast
        and all(is_public_address(inner) for inner in embedded_ipv4(address))
    )


def _is_intranet_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """An address a host named in a group's ``hosts`` may have: private-range, never loopback, link-local
    (cloud metadata at 169.254.169.254), unspecified or multicast, nor carrying such an IPv4 address."""
    for candidate in [address, *embedded_ipv4(address)]:
        if (
            candidate.is_loopback
            or candidate.is_link_local
            or candidate.is_unspecified
            or candidate.is_multicast
            or candidate.is_reserved
        ):
            return False
    return True


def _named(host: str, private_hosts: Collection[str]) -> bool:
    return host.strip("[]").lower().rstrip(".") in private_hosts


def public_addresses(host: str, port: int | None = None, *, private_hosts: Collection[str] = ()) -> list[str]:
    """The addresses ``host`` resolves to, in resolver order; refused unless every one of them is public (or,
    for a host in ``private_hosts``, on a private range)."""
    try:
        addresses = [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise InvalidInput(f"cannot resolve host {host!r}: {exc.strerror}") from None
        addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos))
    named = _named(host, private_hosts)
    for address in addresses:
        if is_public_address(address) or (named and _is_intranet_address(address)):
            continue
        carried = ", ".join(str(inner) for inner in embedded_ipv4(address))
        raise PermissionDenied(
            f"{host} resolves to {address}{f' (carrying {carried})' if carried else ''}, a loopback, private or "
            "reserved address; an admin can list the host in its KB's group allowance (KADAPT_GROUP_ALLOWANCES "
            "hosts) or set KADAPT_ALLOW_PRIVATE_NETWORKS=true for KBs that no group owns"
        )
    return [str(address) for address in addresses]


def check_public_host(url: str, *, allow_private: bool, private_hosts: Collection[str] = ()) -> None:
    """Refuse loopback, private, link-local and reserved addresses before any connection is made."""
    host = urlparse(url).hostname
    if not host:
        raise InvalidInput(f"{url!r} has no host")
    if not allow_private:
        public_addresses(host, private_hosts=private_hosts)


def public_http_client(*, allow_private: bool, private_hosts: Collection[str] = (), **kwargs) -> httpx.Client:
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
    transport._pool = _public_pool(frozenset(private_hosts))
    return httpx.Client(transport=transport, **kwargs)


def _public_pool(private_hosts: frozenset[str]):
    import httpcore
    import httpx

    class PublicOnlyBackend(httpcore.SyncBackend):
        def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
            try:
                addresses = public_addresses(host, port, private_hosts=private_hosts)
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


def git_pin_config(url: str, *, allow_private: bool, private_hosts: Collection[str] = ()) -> dict[str, str]:
    """Git configuration (as ``GIT_CONFIG_*`` environment variables) that keeps a fetch on checked addresses.

    For an http(s) remote: ``http.curloptResolve`` pins the host to the addresses checked now, and
    ``http.followRedirects=false`` keeps git from following a redirect to a host never checked. ssh and git://
    remotes are pinned by :func:`pin_git_remote`. Empty with ``allow_private``.
    """
    if allow_private:
        return {}
    parsed = urlparse(url)
    settings = {"http.followRedirects": "false"}
    if parsed.scheme in ("http", "https") and parsed.hostname and not _is_address(parsed.hostname):
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        addresses = public_addresses(parsed.hostname, port, private_hosts=private_hosts)
        listed = ",".join(f"[{a}]" if ":" in a else a for a in addresses)
        settings["http.curloptResolve"] = f"{parsed.hostname}:{port}:{listed}"
    env = {"GIT_CONFIG_COUNT": str(len(settings))}
    for index, (key, value) in enumerate(settings.items()):
        env[f"GIT_CONFIG_KEY_{index}"] = key
        env[f"GIT_CONFIG_VALUE_{index}"] = value
    return env


def pin_git_remote(url: str, *, allow_private: bool, private_hosts: Collection[str] = ()) -> tuple[str, dict[str, str]]:
    """The URL git should fetch and the environment that keeps it on the addresses checked now.

    ``url`` has a scheme (``user@host:path`` given as ``ssh://user@host/path``). http(s): the URL as it is, with
    :func:`git_pin_config`. git://: the host replaced by the checked address (git would resolve the name again).
    ssh: the URL as it is (so ``~/.ssh/config`` entries for the name apply) and ``GIT_SSH_COMMAND`` with
    ``-o HostName=<checked address>`` (command-line options win over the config file) and
    ``-o HostKeyAlias=<name>`` (known_hosts stays keyed by the name). The ssh command is the admin's
    ``GIT_SSH_COMMAND``/``GIT_SSH`` or ``ssh``, never anything from the URL.
    """
    env = git_pin_config(url, allow_private=allow_private, private_hosts=private_hosts)
    parsed = urlparse(url)
    host = parsed.hostname
    if allow_private or parsed.scheme not in ("ssh", "git") or not host:
        return url, env
    address = public_addresses(host, parsed.port, private_hosts=private_hosts)[0]
    literal = f"[{address}]" if ":" in address else address
    if parsed.scheme == "git":
        netloc = literal + (f":{parsed.port}" if parsed.port else "")
        return parsed._replace(netloc=netloc).geturl(), env
    base = os.environ.get("GIT_SSH_COMMAND") or shlex.quote(os.environ.get("GIT_SSH") or "ssh")
    options = ["-o", f"HostName={address}"]
    if not _is_address(host):
        options += ["-o", f"HostKeyAlias={host}"]
    env["GIT_SSH_COMMAND"] = " ".join([base, *(shlex.quote(option) for option in options)])
    return url, env


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
