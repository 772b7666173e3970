"""Per-key policy checked on every authenticated request, in one place (``auth``).

Allowed domains: when a key lists domains, a request must come from a page on one of
them, as its ``Origin`` (or, failing that, ``Referer``) header says. An entry is an
exact host (``app.example.com``) or a wildcard (``*.example.com``: any subdomain, not
the bare domain). A request naming no origin is refused, as browser-key restrictions
elsewhere do: a server calling with a domain-restricted key is a misuse of that key.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from cg_proxy import errors


def request_host(headers: Mapping[str, str]) -> str | None:
    for name in ("origin", "referer"):
        value = headers.get(name)
        if value and value != "null":
            try:
                host = urlsplit(value).hostname
            except ValueError:
                return None
            return host.lower().rstrip(".") if host else None
    return None


def domain_allowed(host: str, patterns: list[str]) -> bool:
    for pattern in patterns:
        if pattern.startswith("*."):
            suffix = pattern[1:]  # ".example.com"
            if host.endswith(suffix) and len(host) > len(suffix):
                return True
        elif host == pattern:
            return True
    return False


def check_domain(allowed: list[str], headers: Mapping[str, str]) -> None:
    if not allowed:
        return
    host = request_host(headers)
    if host is None or not domain_allowed(host, allowed):
        raise errors.APIError(
            403,
            "This API key may only be used from its allowed domains"
            + (f"; {host!r} is not one of them." if host else "; the request names no Origin or Referer."),
            type="permission_error",
            code="domain_not_allowed",
        )
