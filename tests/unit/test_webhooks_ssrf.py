"""Where webhooks may go (cglib.egress): public addresses only, IPv4 and IPv6, an IPv4
address hidden in an IPv6 one included; https only; names judged by what they resolve to.
And the worker's resolver, which judges the addresses its connections are made to."""

from __future__ import annotations

import ipaddress

import aiohttp
import pytest

from cg_worker.webhook_delivery import PublicOnlyResolver
from cglib.egress import UnsafeUrl, address_refusal, check_url, parse_url

REFUSED = {
    "127.0.0.1": "loopback",
    "127.255.255.254": "loopback",
    "10.1.2.3": "private",
    "172.16.0.1": "private",
    "192.168.1.1": "private",
    "169.254.169.254": "link-local",  # cloud metadata
    "100.64.0.1": "non-public",  # carrier-grade NAT
    "0.0.0.0": "unspecified",
    "224.0.0.1": "multicast",
    "240.0.0.1": "private",  # reserved (Python counts 240/4 among the private ranges)
    "255.255.255.255": "private",
    "192.0.2.10": "private",  # documentation
    "::1": "loopback",
    "::": "unspecified",
    "fe80::1": "link-local",
    "fc00::1": "private",
    "fd12:3456::1": "private",
    "ff02::1": "multicast",
    "2001:db8::1": "private",
    "::ffff:127.0.0.1": "loopback",  # IPv4-mapped
    "::ffff:10.0.0.1": "private",
    "::ffff:169.254.169.254": "link-local",
    "::127.0.0.1": "loopback",  # IPv4-compatible
    "2002:7f00:1::": "loopback",  # 6to4 of 127.0.0.1
    "2002:a9fe:a9fe::1": "link-local",  # 6to4 of 169.254.169.254
    "64:ff9b::a9fe:a9fe": "link-local",  # NAT64 of 169.254.169.254
    "2001:0:4136:e378:8000:63bf:80ff:fffe": "loopback",  # Teredo, client 127.0.0.1
}
PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "2a00:1450:4001:80b::200e"]


@pytest.mark.parametrize("address,why", sorted(REFUSED.items()))
def test_non_public_addresses_are_refused(address, why):
    assert address_refusal(ipaddress.ip_address(address)) == why


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address):
    assert address_refusal(ipaddress.ip_address(address)) is None


def test_a_scoped_link_local_address_is_refused():
    assert address_refusal(ipaddress.ip_address("fe80::1%eth0")) == "link-local"


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hook",
        "https://[::1]:8443/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://[::ffff:a9fe:a9fe]/latest/meta-data",
        "https://169.254.169.254/latest/meta-data",
        "https://10.0.0.5/",
        "https://0.0.0.0/",
    ],
)
def test_a_url_to_a_non_public_literal_is_refused(url):
    with pytest.raises(UnsafeUrl, match="public address"):
        parse_url(url)
    parse_url(url.replace("https", "http", 1), allow_private=True)  # development: allowed


@pytest.mark.parametrize(
    "url,match",
    [
        ("http://93.184.216.34/hook", "https"),
        ("ftp://93.184.216.34/hook", "https"),
        ("https://user:pw@93.184.216.34/hook", "user name"),
        ("https://93.184.216.34/hook#x", "fragment"),
        ("https:///hook", "host"),
        ("https://93.184.216.34:99999/", "valid URL"),
        ("https://exa mple.com/", "spaces"),
        ("", "1 to"),
        ("https://93.184.216.34/" + "a" * 2000, "1 to"),
    ],
)
def test_malformed_or_plain_http_urls_are_refused(url, match):
    with pytest.raises(UnsafeUrl, match=match):
        parse_url(url)


def test_a_public_https_url_passes():
    target = parse_url("https://93.184.216.34:8443/hooks?x=1")
    assert (target.scheme, target.host, target.port) == ("https", "93.184.216.34", 8443)


@pytest.mark.parametrize(
    "url",
    [
        "https://localhost/hook",
        "https://LOCALHOST/hook",
        "https://127.1/hook",  # resolves to 127.0.0.1
        "https://2130706433/hook",  # 127.0.0.1 in decimal
        "https://0x7f000001/hook",
    ],
)
async def test_a_name_that_resolves_to_loopback_is_refused(url):
    with pytest.raises(UnsafeUrl, match="loopback"):
        await check_url(url)
    await check_url(url.replace("https", "http", 1), allow_private=True)


async def test_a_name_that_does_not_resolve_is_refused():
    with pytest.raises(UnsafeUrl, match="does not resolve"):
        await check_url("https://no-such-host.invalid/hook")


async def test_the_workers_connections_refuse_a_name_that_resolves_to_loopback():
    """At delivery time the resolver the connection uses judges the addresses (a name
    registered while public and later pointed at 127.0.0.1 is refused then)."""
    connector = aiohttp.TCPConnector(resolver=PublicOnlyResolver(), use_dns_cache=False)
    async with aiohttp.ClientSession(connector=connector) as http:
        with pytest.raises(UnsafeUrl, match="loopback"):
            await http.post("http://localhost:9/hook", data=b"{}")
