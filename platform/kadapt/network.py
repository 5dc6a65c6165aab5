"""Network guards shared by the connectors that fetch from hosts (web, git)."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlparse

from kadapt.errors import InvalidInput, PermissionDenied

__all__ = ["check_public_host"]


def check_public_host(url: str, *, allow_private: bool) -> None:
    """Refuse loopback, private, link-local and reserved addresses before any connection is made."""
    host = urlparse(url).hostname
    if not host:
        raise InvalidInput(f"{url!r} has no host")
    if allow_private:
        return
    try:
        addresses = {ipaddress.ip_address(host)}
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, None)
        except socket.gaierror as exc:
            raise InvalidInput(f"cannot resolve host {host!r}: {exc.strerror}") from None
        addresses = {ipaddress.ip_address(info[4][0]) for info in infos}
    for address in addresses:
        if not address.is_global or address.is_multicast:
            raise PermissionDenied(
                f"{host} resolves to {address}, a loopback, private or reserved address; "
                "set KADAPT_ALLOW_PRIVATE_NETWORKS=true to reach intranet hosts"
            )
