"""Fetching a source as a polite, robust HTTP client.

Owns the HTTP side of polling: conditional GET (ETag, Last-Modified), gzip, a User-Agent
naming partnerpost and its public URL, a time limit for the whole fetch, a size limit,
at most five redirects, http and https only, `Retry-After`, and the guard against
requests into the internal network: every address a host resolves to, the hosts of
redirects included, must be public unless `PARTNERPOST_SOURCES_ALLOW_PRIVATE` allows
private ones; the check runs when the connection is made, on the address connected to,
so a name that resolves differently a moment later (DNS rebinding) gains nothing.
Imports `config`, `errors`, `clock`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import typing
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from importlib.metadata import PackageNotFoundError, version
from types import TracebackType
from urllib.parse import urljoin, urlsplit

import httpcore
import httpx

from service.clock import utcnow
from service.config import Settings
from service.errors import PartnerpostError

MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
AddressCheck = Callable[[IPAddress], bool]


class SourceFetchError(PartnerpostError, ConnectionError):
    """A fetch failed: the HTTP status when there was one, and how long the server asked
    us to wait (`Retry-After`, seconds) when it said."""

    def __init__(
        self,
        url: str,
        reason: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.url = url
        self.reason = reason
        self.status = status
        self.retry_after = retry_after
        super().__init__(f"cannot fetch {url!r}: {reason}")


class AddressRefusedError(PartnerpostError, ConnectionRefusedError):
    """A host resolved to an address sources may not reach."""

    def __init__(self, host: str, address: str) -> None:
        self.host = host
        self.address = address
        super().__init__(
            f"{host!r} resolves to {address}, a loopback or private address; set "
            "PARTNERPOST_SOURCES_ALLOW_PRIVATE=true to allow sources there"
        )


@dataclass(frozen=True)
class Fetched:
    """A successful fetch: the body (None when 304 said it is unchanged) and validators."""

    url: str  # after redirects
    status: int
    content: bytes | None
    content_type: str | None
    etag: str | None
    last_modified: str | None

    @property
    def not_modified(self) -> bool:
        return self.status == 304


# NAT64 (RFC 6052): a gateway forwards 64:ff9b::a.b.c.d to a.b.c.d. The local-use prefix
# (RFC 8215) serves one network only and is never public.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_LOCAL_NAT64 = ipaddress.ip_network("64:ff9b:1::/48")


def is_public(address: IPAddress) -> bool:
    """Whether an address is on the public internet (not loopback, private, link-local,
    shared, multicast, reserved). An IPv6 address that carries an IPv4 one a gateway
    forwards to (IPv4-mapped, 6to4, NAT64) counts as that IPv4 address."""
    if isinstance(address, ipaddress.IPv6Address):
        if address in _LOCAL_NAT64:
            return False
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            address = embedded
    return address.is_global and not address.is_multicast


def address_check(settings: Settings) -> AddressCheck:
    return (lambda _: True) if settings.sources_allow_private else is_public


async def _resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def check_host(host: str, port: int, allowed: AddressCheck) -> list[str]:
    """The addresses of `host`, or `AddressRefusedError` if any of them is not allowed (a
    name with one public and one private address is refused too)."""
    try:
        addresses = await _resolve(host, port)
    except OSError as exc:
        raise httpcore.ConnectError(f"cannot resolve {host!r}: {exc}") from exc
    for address in addresses:
        if not allowed(ipaddress.ip_address(address.split("%")[0])):
            raise AddressRefusedError(host, address)
    return addresses


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Connects only to checked addresses: resolves the host itself, checks every address,
    then connects to those, one after the other."""

    def __init__(self, allowed: AddressCheck) -> None:
        self._allowed = allowed
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        failure: Exception | None = None
        for address in await check_host(host, port, self._allowed):
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout, OSError) as exc:
                failure = exc
        raise httpcore.ConnectError(f"cannot connect to {host!r}: {failure}")

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("sources are fetched over TCP only")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def user_agent(settings: Settings) -> str:
    if settings.sources_user_agent:
        return settings.sources_user_agent
    try:
        release = version("partnerpost")
    except PackageNotFoundError:
        release = "0"
    return f"partnerpost/{release} (+{settings.public_url})"


def retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a `Retry-After` value (seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        return None
    return max(0.0, (moment - now).total_seconds())


class Fetcher:
    """An HTTP client for sources; open it with `async with`, which also closes it."""

    def __init__(self, settings: Settings, *, allowed: AddressCheck | None = None) -> None:
        self._settings = settings
        self._allowed = allowed or address_check(settings)
        # Loading the CA bundle takes 30-80 ms of the event loop: once per client, not
        # again for the transport's own pool, which is replaced below.
        ssl_context = httpx.create_ssl_context()
        transport = httpx.AsyncHTTPTransport(verify=ssl_context, trust_env=False)
        # httpx takes no network backend: give its transport a pool that connects through
        # the guard (the pool is the transport's only state).
        transport._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            network_backend=_GuardedBackend(self._allowed),
            max_connections=settings.sources_concurrency * 2,
        )
        self._client = httpx.AsyncClient(
            transport=transport,
            follow_redirects=False,
            trust_env=False,
            timeout=httpx.Timeout(settings.sources_timeout_seconds),
            headers={"User-Agent": user_agent(settings), "Accept-Encoding": "gzip, deflate"},
        )

    async def __aenter__(self) -> Fetcher:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._client.aclose()

    async def fetch(
        self, url: str, *, etag: str | None = None, last_modified: str | None = None
    ) -> Fetched:
        """GET `url`, conditionally when validators are given; `SourceFetchError` for
        anything but 200 or 304, or when a limit is exceeded."""
        headers = {
            "Accept": "application/rss+xml, application/atom+xml, "
            "application/feed+json, application/json, text/html;q=0.9, */*;q=0.8"
        }
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        seconds = self._settings.sources_timeout_seconds
        try:
            async with asyncio.timeout(seconds):
                return await self._follow(url, headers)
        except TimeoutError as exc:
            raise SourceFetchError(url, f"no complete answer within {seconds:g} s") from exc
        except (AddressRefusedError, httpcore.ConnectError) as exc:
            # httpcore's error is the resolver's, from the check before connecting.
            raise SourceFetchError(url, str(exc)) from exc
        except httpx.TimeoutException as exc:
            raise SourceFetchError(url, f"timed out ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            raise SourceFetchError(url, f"{type(exc).__name__}: {exc}") from exc

    async def _follow(self, url: str, headers: dict[str, str]) -> Fetched:
        seen: list[str] = []
        while True:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise SourceFetchError(url, "only http and https URLs can be fetched")
            # Checked here too for a clear message before any connection is tried.
            port = parts.port or (443 if parts.scheme == "https" else 80)
            await check_host(parts.hostname, port, self._allowed)
            seen.append(url)
            request = self._client.build_request("GET", url, headers=headers)
            response = await self._client.send(request, stream=True)
            try:
                if response.status_code in _REDIRECTS:
                    url = self._redirect_target(url, response, seen)
                    continue
                return await self._result(url, response)
            finally:
                await response.aclose()

    @staticmethod
    def _redirect_target(url: str, response: httpx.Response, seen: list[str]) -> str:
        location = response.headers.get("location")
        if not location:
            raise SourceFetchError(url, f"redirect {response.status_code} without a Location")
        target: str = urljoin(url, location)
        if target in seen:
            raise SourceFetchError(seen[0], f"redirect loop: {' → '.join([*seen, target])}")
        if len(seen) > MAX_REDIRECTS:
            raise SourceFetchError(seen[0], f"more than {MAX_REDIRECTS} redirects")
        return target

    async def _result(self, url: str, response: httpx.Response) -> Fetched:
        status = response.status_code
        if status not in (200, 304):
            raise SourceFetchError(
                url,
                f"HTTP {status} {response.reason_phrase}".rstrip(),
                status=status,
                retry_after=retry_after(response.headers.get("retry-after"), utcnow()),
            )
        content = None if status == 304 else await self._body(url, response)
        return Fetched(
            url=url,
            status=status,
            content=content,
            content_type=response.headers.get("content-type"),
            etag=response.headers.get("etag"),
            last_modified=response.headers.get("last-modified"),
        )

    async def _body(self, url: str, response: httpx.Response) -> bytes:
        limit = self._settings.sources_max_bytes
        too_big = f"larger than the limit of {limit} bytes (PARTNERPOST_SOURCES_MAX_BYTES)"
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise SourceFetchError(url, f"{too_big}: Content-Length {declared}")
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():  # unpacked: gzip counts as it expands
            size += len(chunk)
            if size > limit:
                raise SourceFetchError(url, too_big)
            chunks.append(chunk)
        return b"".join(chunks)
