"""Which IP addresses an outbound request (an image fetch, a webhook) may reach: no private or internal ones.

It lives in `db`, stdlib only, because `db` is the one package both the API (image URLs) and the workers
(webhooks) may import; neither may import the other's modules.
"""
from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# Beyond what ipaddress calls non-global: shared address space (carrier NAT, some clouds' metadata), the AWS
# metadata addresses by name, and the IPv6 wrappers that carry an IPv4 address through NAT64 or 6to4.
BLOCKED_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "100.64.0.0/10", "169.254.169.254/32", "fd00:ec2::254/128", "64:ff9b::/96", "64:ff9b:1::/48", "2002::/16",
))


class ForbiddenAddress(Exception):
    """A host that resolves to an address outbound requests must not reach."""


class UnresolvedHost(Exception):
    """A host name that does not resolve (now: DNS may answer later)."""


def allowed_networks(cidrs: Iterable[str]) -> list[IPNetwork]:
    """The networks of an allowlist setting (e.g. ["127.0.0.1/32"] in tests)."""
    return [ipaddress.ip_network(cidr, strict=False) for cidr in cidrs]


def is_forbidden(address: IPAddress, allowed: list) -> bool:
    """Whether an address is private, loopback, link-local, multicast, reserved or metadata (unless allowed)."""
    if any(address in network for network in allowed):
        return False
    if address.version == 6 and address.ipv4_mapped:
        address = address.ipv4_mapped
    return (not address.is_global or address.is_multicast or address.is_reserved or address.is_loopback
            or address.is_link_local or address.is_unspecified or getattr(address, "is_site_local", False)
            or any(address in network for network in BLOCKED_NETWORKS))


def resolve_public(host: str, port: int, allowed: list) -> IPAddress:
    """The address to connect to: UnresolvedHost if the name has none, ForbiddenAddress if any it has is forbidden."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError) as exc:
        raise UnresolvedHost(f"host {host!r} could not be resolved: {exc}") from None
    # Every address is checked, not just the first, so a name with one public and one private record is refused.
    addresses = [ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos]
    if not addresses:
        raise UnresolvedHost(f"host {host!r} has no address")
    for address in addresses:
        if is_forbidden(address, allowed):
            raise ForbiddenAddress(f"host {host!r} resolves to {address}, a private or reserved address")
    return addresses[0]
