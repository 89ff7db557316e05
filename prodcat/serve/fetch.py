"""Fetching product images from URLs without becoming an SSRF proxy or a resource sink.

A URL given by a client is fetched only when every address its host resolves to is a public
unicast address: loopback, private (RFC 1918, unique-local), link-local (incl. cloud metadata
169.254.169.254), multicast, reserved, unspecified and shared (CGNAT) addresses are refused unless
the :class:`FetchConfig` allows them (``allow_private`` or ``allowed_networks``). The connection goes
to the address that was checked (no second DNS lookup, so DNS rebinding cannot swap it), with the
original host in the ``Host`` header (IPv6 literals bracketed, RFC 9110 §7.2) and as TLS server
name. Redirects are followed by hand, each hop checked again.

One deadline (``timeout_s``) covers the whole fetch of a URL: DNS resolution (in a small thread
pool, so a resolver that hangs costs a bounded number of threads), connecting, the response
headers and the body, across every redirect hop; a server that trickles its headers or streams an
endless body is cut off when the deadline passes, and a byte cap bounds the body.
:func:`fetch_url_async` is the form the Serve ingress awaits; :func:`fetch_url` runs it to
completion for synchronous callers.

Every failure is a :class:`FetchError` with a machine-readable ``reason`` and the HTTP status a
service should answer with (4xx: the client's URL is at fault, never a 500).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from concurrent.futures import ThreadPoolExecutor
from typing import AsyncIterator
from urllib.parse import urljoin, urlsplit, urlunsplit

from pydantic import Field

from prodcat.core.config import StrictModel

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # IPv6 addresses that embed an IPv4 address


class FetchConfig(StrictModel):
    """Limits and the allow-list for image URLs."""

    timeout_s: float = Field(5.0, gt=0, description="deadline for one URL: DNS, connect, headers "
                             "and body across all redirect hops (s)")
    max_bytes: int = Field(10 * 1024 * 1024, gt=0, description="largest body accepted (bytes)")
    max_redirects: int = Field(3, ge=0, description="redirect hops followed, each re-checked")
    schemes: list[str] = Field(["http", "https"], description="URL schemes accepted")
    allow_private: bool = Field(False, description="allow every non-public address (trusted "
                                "networks only: this turns the guard off)")
    allowed_networks: list[str] = Field([], description="CIDRs allowed although not public, "
                                        "e.g. ['127.0.0.1/32'] for a local image server")
    max_in_flight: int = Field(16, gt=0, description="image fetches at once per ingress replica; "
                               "more wait (inside the request's timeout)")


class FetchError(Exception):
    """A URL that was not fetched; ``reason`` is a code, ``status`` the HTTP status to answer."""

    def __init__(self, reason: str, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status


def _networks(config: FetchConfig) -> list[ipaddress._BaseNetwork]:
    try:
        return [ipaddress.ip_network(n, strict=False) for n in config.allowed_networks]
    except ValueError as err:
        raise ValueError(f"allowed_networks: {err}") from None


def _unwrap(address: IPAddress) -> IPAddress:
    """The IPv4 address inside an IPv4-mapped, 6to4 or NAT64 IPv6 address; else itself."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def is_public(address: IPAddress) -> bool:
    """True for a globally routable unicast address (not loopback/private/link-local/multicast/
    reserved/unspecified/shared); IPv6 addresses that embed an IPv4 one are judged by it."""
    address = _unwrap(address)
    return bool(address.is_global) and not (
        address.is_multicast or address.is_loopback or address.is_link_local or address.is_private
        or address.is_reserved or address.is_unspecified)


def check_address(address: str | IPAddress, config: FetchConfig) -> None:
    """Refuse an address that is not public unless the config allows it.

    Raises:
        FetchError: ``url_blocked_address`` (403) naming the address and its kind.
    """
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if is_public(ip) or config.allow_private:
        return
    if any(candidate in net for net in _networks(config) for candidate in {ip, _unwrap(ip)}
           if candidate.version == net.version):
        return
    inner = _unwrap(ip)
    kind = ("loopback" if inner.is_loopback else "link-local" if inner.is_link_local
            else "multicast" if inner.is_multicast else "private" if inner.is_private
            else "reserved" if inner.is_reserved else "non-public")
    raise FetchError("url_blocked_address",
                     f"refused to fetch from {kind} address {ip}: only public addresses are allowed",
                     status=403)


#: DNS lookups run here: a resolver that hangs ties up at most these threads, and lookups queued
#: behind them still end at their URL's deadline
_DNS_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="prodcat-dns")


def _literal(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


def _lookup(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as err:
        raise FetchError("url_unresolvable", f"cannot resolve host {host!r}: {err}") from None
    return sorted({info[4][0] for info in infos})


def resolve(host: str, port: int) -> list[str]:
    """All addresses ``host`` resolves to (an IP literal resolves to itself), blocking.

    Raises:
        FetchError: ``url_unresolvable`` (422) when DNS has no answer.
    """
    literal = _literal(host)
    return [literal] if literal else _lookup(host, port)


async def resolve_async(host: str, port: int) -> list[str]:
    """:func:`resolve` in the DNS thread pool; cancelled (by the caller's deadline) while it
    waits, so a hanging resolver never holds a request past its deadline."""
    literal = _literal(host)
    if literal:
        return [literal]
    return await asyncio.get_running_loop().run_in_executor(_DNS_POOL, _lookup, host, port)


def _parse(url: str, config: FetchConfig) -> tuple[str, str, int, object]:
    """``(scheme, host, port, urlsplit parts)`` of an acceptable URL.

    Raises:
        FetchError: ``url_invalid`` / ``url_scheme`` (422).
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as err:
        raise FetchError("url_invalid", f"invalid URL {url!r}: {err}") from None
    scheme = parts.scheme.lower()
    if scheme not in config.schemes:
        raise FetchError("url_scheme", f"URL scheme {scheme or '(none)'!r} is not allowed; use "
                         f"{' or '.join(config.schemes)}")
    host = parts.hostname
    if not host:
        raise FetchError("url_invalid", f"URL {url!r} has no host")
    if parts.username or parts.password:
        raise FetchError("url_invalid", "URLs with credentials are not accepted")
    return scheme, host, port or (443 if scheme == "https" else 80), parts


def _pin(scheme: str, host: str, port: int, parts, addresses: list[str],
         config: FetchConfig) -> tuple[str, str, str]:
    """Check every address and build ``(target URL, Host header, TLS server name)``."""
    for address in addresses:  # every answer must pass: an attacker may control the DNS order
        check_address(address, config)
    address = addresses[0]
    netloc = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    name = f"[{host}]" if ":" in host else host          # an IPv6 literal is bracketed
    host_header = name if parts.port is None else f"{name}:{parts.port}"
    target = urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))
    return target, host_header, host


def checked_target(url: str, config: FetchConfig) -> tuple[str, str, str]:
    """Validate ``url`` and pick the address to connect to (blocking DNS).

    Returns:
        ``(url with the host replaced by the checked address, Host header, TLS server name)``.

    Raises:
        FetchError: ``url_invalid`` / ``url_scheme`` (422), ``url_unresolvable`` (422),
            ``url_blocked_address`` (403).
    """
    scheme, host, port, parts = _parse(url, config)
    return _pin(scheme, host, port, parts, resolve(host, port), config)


async def checked_target_async(url: str, config: FetchConfig) -> tuple[str, str, str]:
    """:func:`checked_target` with DNS in the resolver pool (awaitable, cancellable)."""
    scheme, host, port, parts = _parse(url, config)
    return _pin(scheme, host, port, parts, await resolve_async(host, port), config)


def fetch_url(url: str, config: FetchConfig | None = None) -> bytes:
    """GET ``url`` under the guard and limits of ``config`` (blocking: runs
    :func:`fetch_url_async` in its own event loop); the body's bytes.

    Raises:
        FetchError: as :func:`fetch_url_async`.
    """
    return asyncio.run(fetch_url_async(url, config))


async def fetch_url_async(url: str, config: FetchConfig | None = None) -> bytes:
    """GET ``url`` under the guard and limits of ``config``; the body's bytes.

    One deadline, ``config.timeout_s``, covers DNS, connecting, the response headers and the
    body across every redirect hop.

    Raises:
        FetchError: with reason ``url_invalid``, ``url_scheme``, ``url_unresolvable``,
            ``url_blocked_address`` (403), ``url_timeout`` (the deadline passed; 422: the client's
            URL is slow), ``url_unreachable``, ``url_http_status`` (the remote answered 4xx/5xx),
            ``url_too_many_redirects`` or ``url_too_large`` (413).
    """
    config = config or FetchConfig()
    try:
        async with asyncio.timeout(config.timeout_s):
            return await _fetch(url, config)
    except TimeoutError:
        raise FetchError("url_timeout", f"fetching {url} took longer than {config.timeout_s:g} s "
                         "(DNS, connect, headers and body together)") from None


_SSL_CONTEXT = None


def _ssl_context():
    """One TLS context per process: building one loads the CA bundle (~18 ms, on the event loop)."""
    global _SSL_CONTEXT
    if _SSL_CONTEXT is None:
        import httpx

        _SSL_CONTEXT = httpx.create_ssl_context()
    return _SSL_CONTEXT


async def _fetch(url: str, config: FetchConfig) -> bytes:
    import httpx

    timeout = httpx.Timeout(config.timeout_s)
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False,
                                 verify=_ssl_context()) as client:
        for _hop in range(config.max_redirects + 1):
            target, host_header, server_name = await checked_target_async(url, config)
            body_or_next = await _get_once(client, target, host_header, server_name, url, config)
            if isinstance(body_or_next, bytes):
                return body_or_next
            url = body_or_next
    raise FetchError("url_too_many_redirects",
                     f"more than {config.max_redirects} redirects; last location {url!r}")


async def _get_once(client, target: str, host_header: str, server_name: str, url: str,
                    config: FetchConfig) -> bytes | str:
    """One request: the body (bytes) or the next URL to follow (str)."""
    import httpx

    headers = {"Host": host_header, "Accept": "image/*", "User-Agent": "prodcat-image-fetch/1"}
    try:
        async with client.stream("GET", target, headers=headers,
                                 extensions={"sni_hostname": server_name}) as response:
            if response.is_redirect:
                location = response.headers.get("location")
                if not location:
                    raise FetchError("url_http_status", f"redirect without a Location from {url}")
                return urljoin(url, location)
            if response.status_code >= 400:
                raise FetchError("url_http_status",
                                 f"{url} answered HTTP {response.status_code}", status=422)
            declared = response.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > config.max_bytes:
                raise _too_large(url, config)
            return await _read_capped(response.aiter_bytes(), url, config)
    except httpx.TimeoutException:
        raise FetchError("url_timeout", f"fetching {url} took longer than {config.timeout_s:g} s") from None
    except httpx.HTTPError as err:
        raise FetchError("url_unreachable", f"cannot fetch {url}: {type(err).__name__}: {err}") from None


async def _read_capped(chunks: AsyncIterator[bytes], url: str, config: FetchConfig) -> bytes:
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > config.max_bytes:
            raise _too_large(url, config)
    return bytes(body)


def _too_large(url: str, config: FetchConfig) -> FetchError:
    return FetchError("url_too_large", f"{url} is larger than {config.max_bytes} bytes", status=413)
