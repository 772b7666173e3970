"""Where a server may send requests on a tenant's behalf (webhooks): public hosts only.

A URL a tenant gives us is refused (``UnsafeUrl``, whose message says why) unless:

- its scheme is ``https`` (``http`` too when private targets are allowed: development);
- it names a host, and carries no user name, password or fragment;
- every address its host resolves to is public: not unspecified, loopback, link-local
  (169.254/16, where cloud metadata lives; fe80::/10), multicast, private (RFC 1918,
  fc00::/7, ...), reserved, shared (100.64/10) or otherwise not globally routable. An
  IPv6 address that carries an IPv4 one (IPv4-mapped ``::ffff:a.b.c.d``, IPv4-compatible,
  6to4, Teredo, NAT64 ``64:ff9b::/96``) is also judged by that IPv4 address.

``check_url`` runs at registration; the deliverer checks again at every attempt, on the
addresses it then connects to (``address_refusal``), so a name that later resolves
elsewhere (DNS rebinding) is refused then. With ``allow_private`` (development: the
tests' local servers) addresses are not checked and ``http`` is allowed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_URL_LENGTH = 2000
RESOLVE_TIMEOUT_S = 5.0
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class UnsafeUrl(ValueError):
    """The URL may not be called; the message says why, for the person who gave it."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str  # lower case, without brackets
    port: int
    literal: IPAddress | None  # the host, when it is an IP address


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64 or (int(ip) >> 32 == 0 and int(ip) > 1):  # NAT64, or IPv4-compatible ::a.b.c.d
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_refusal(ip: IPAddress) -> str | None:
    """Why a request may not go to ``ip`` ("loopback", "private", ...), or None when it is
    a public address."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            ip = ipaddress.IPv6Address(str(ip).split("%", 1)[0])
        v4 = _embedded_v4(ip)
        if v4 is not None and (why := address_refusal(v4)) is not None:
            return why
    for word in ("unspecified", "loopback", "link_local", "multicast", "private", "reserved"):
        if getattr(ip, f"is_{word}"):
            return word.replace("_", "-")
    if not ip.is_global:
        return "non-public"
    return None


def parse_url(url: str, allow_private: bool = False) -> Target:
    """The URL's scheme, host and port, or ``UnsafeUrl``. An IP-literal host is judged
    here; a name is judged by ``resolve``."""
    if not url or len(url) > MAX_URL_LENGTH or not url.isprintable() or any(c.isspace() for c in url):
        raise UnsafeUrl(f"a URL of 1 to {MAX_URL_LENGTH} printable characters, without spaces")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UnsafeUrl("not a valid URL") from None
    scheme = parts.scheme.lower()
    allowed = ("https", "http") if allow_private else ("https",)
    if scheme not in allowed:
        raise UnsafeUrl("must be an https:// URL" if not allow_private else "must be an http(s):// URL")
    if parts.username is not None or parts.password is not None:
        raise UnsafeUrl("must not carry a user name or password")
    if parts.fragment:
        raise UnsafeUrl("must not have a fragment (#...)")
    host = (parts.hostname or "").lower()
    if not host:
        raise UnsafeUrl("must name a host")
    literal: IPAddress | None
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None and not allow_private and (why := address_refusal(literal)) is not None:
        raise UnsafeUrl(f"must be a public address, not a {why} one")
    return Target(scheme, host, port or (443 if scheme == "https" else 80), literal)


async def resolve(host: str, port: int, allow_private: bool = False) -> list[str]:
    """Every address ``host`` resolves to (``UnsafeUrl`` if none, or if any is not public
    and ``allow_private`` is off: a name that resolves to a public and a private address
    could be made to reach the private one)."""
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout=RESOLVE_TIMEOUT_S)
    except (OSError, TimeoutError, UnicodeError):
        raise UnsafeUrl(f"the host {host} does not resolve") from None
    addresses = list(dict.fromkeys(str(info[4][0]).split("%", 1)[0] for info in infos))
    if not addresses:
        raise UnsafeUrl(f"the host {host} does not resolve")
    if not allow_private:
        for address in addresses:
            why = address_refusal(ipaddress.ip_address(address))
            if why is not None:
                raise UnsafeUrl(f"the host {host} resolves to a {why} address ({address})")
    return addresses


async def check_url(url: str, allow_private: bool = False) -> Target:
    """``parse_url``, then the host resolved and every address judged."""
    target = parse_url(url, allow_private)
    if target.literal is None:
        await resolve(target.host, target.port, allow_private)
    return target
