"""The SSRF guard of image URL fetches. Nothing here leaves the machine: refused addresses are
refused before any connection, DNS answers are faked, and allowed fetches go to a local server."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from prodcat.serve.fetch import FetchConfig, FetchError, check_address, checked_target, fetch_url

pytestmark = pytest.mark.unit

LOCAL = FetchConfig(allowed_networks=["127.0.0.1/32"], timeout_s=2.0, max_bytes=1000)


class _Handler(BaseHTTPRequestHandler):
    seen: list[tuple[str, str]] = []

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):  # noqa: N802 (http.server's naming)
        try:
            self._route()
        except (BrokenPipeError, ConnectionResetError):
            pass                       # the client hung up on purpose (byte cap, timeout)

    def _route(self) -> None:
        _Handler.seen.append((self.path, self.headers.get("Host", "")))
        if self.path == "/ok.png":
            self._send(200, b"\x89PNG" + b"x" * 100)
        elif self.path == "/big":
            self._send(200, b"x" * 5000)
        elif self.path == "/big-chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for _ in range(10):
                self.wfile.write(b"200\r\n" + b"y" * 512 + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        elif self.path == "/slow":
            time.sleep(3)
            self._send(200, b"late")
        elif self.path == "/to-metadata":
            self._redirect("http://169.254.169.254/latest/meta-data/")
        elif self.path == "/to-private":
            self._redirect("http://10.0.0.7/internal.png")
        elif self.path == "/to-ok":
            self._redirect("/ok.png")
        elif self.path == "/loop":
            self._redirect("/loop")
        elif self.path == "/trickle-headers":           # headers that never end, a byte at a time
            self.wfile.write(b"HTTP/1.1 200 OK\r\n")
            for _ in range(300):                        # bounded: 30 s at most
                self.wfile.write(b"X-Slow: a\r\n")
                self.wfile.flush()
                time.sleep(0.1)
        elif self.path in ("/endless-slow", "/endless-fast"):   # a body that never ends
            self.send_response(200)
            self.end_headers()                          # no Content-Length: read until close
            for _ in range(3000):                       # bounded: 30 s / 3 GB at most
                self.wfile.write(b"z" * 1024)
                if self.path == "/endless-slow":
                    time.sleep(0.01)
        else:
            self._send(404, b"no")

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture
def fake_dns(monkeypatch):
    """Route chosen host names to chosen addresses; any other lookup fails (no real DNS)."""
    table: dict[str, list[str]] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        try:
            ipaddress.ip_address(host)
            return real(host, port, *args, **kwargs)   # an IP literal: no DNS involved
        except ValueError:
            pass
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                 (a, port)) for a in table[host]]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return table


@pytest.mark.parametrize("address", ["127.0.0.1", "127.8.9.10", "::1", "10.0.0.1", "172.16.5.4",
                                     "192.168.1.1", "169.254.169.254", "fe80::1", "fd12::1",
                                     "224.0.0.251", "0.0.0.0", "100.64.0.1", "240.0.0.1",
                                     "::ffff:127.0.0.1", "::ffff:10.0.0.1", "64:ff9b::a9fe:a9fe"])
def test_non_public_addresses_are_refused(address):
    with pytest.raises(FetchError) as err:
        check_address(address, FetchConfig())
    assert err.value.reason == "url_blocked_address" and err.value.status == 403


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_pass(address):
    check_address(address, FetchConfig())


def test_allow_list_and_allow_private():
    check_address("127.0.0.1", LOCAL)
    with pytest.raises(FetchError):
        check_address("127.0.0.2", LOCAL)           # only the listed network
    with pytest.raises(FetchError):
        check_address("10.0.0.1", LOCAL)
    check_address("10.0.0.1", FetchConfig(allow_private=True))


@pytest.mark.parametrize("url", ["http://127.0.0.1/x.png", "http://[::1]:8080/x.png",
                                 "http://169.254.169.254/latest/meta-data/",
                                 "http://10.1.2.3/a.jpg", "http://0x7f000001/x.png"])
def test_urls_to_blocked_addresses_are_refused_before_connecting(url, server, fake_dns):
    _Handler.seen.clear()
    with pytest.raises(FetchError) as err:
        fetch_url(url, FetchConfig(timeout_s=1))
    assert err.value.reason in {"url_blocked_address", "url_unresolvable"}
    assert _Handler.seen == []


def test_hostname_resolving_to_loopback_is_refused(server, fake_dns):
    port = server.rsplit(":", 1)[1]
    fake_dns["images.example"] = ["127.0.0.1"]
    _Handler.seen.clear()
    with pytest.raises(FetchError) as err:
        fetch_url(f"http://images.example:{port}/ok.png", FetchConfig())
    assert err.value.reason == "url_blocked_address"
    assert _Handler.seen == []


def test_any_blocked_answer_refuses_the_host(fake_dns):
    fake_dns["mixed.example"] = ["8.8.8.8", "10.0.0.1"]   # rebinding-style mixed answer
    with pytest.raises(FetchError) as err:
        checked_target("http://mixed.example/a.png", FetchConfig())
    assert err.value.reason == "url_blocked_address"


def test_connection_is_pinned_to_the_checked_address(server, fake_dns):
    port = server.rsplit(":", 1)[1]
    fake_dns["images.example"] = ["127.0.0.1"]
    _Handler.seen.clear()
    body = fetch_url(f"http://images.example:{port}/ok.png", LOCAL)
    assert body.startswith(b"\x89PNG")
    # other tests' slow requests may still be finishing on the shared server: look at this one's
    assert [s for s in _Handler.seen if s[0] == "/ok.png"] == [("/ok.png", f"images.example:{port}")]


def test_allowed_local_fetch(server):
    assert fetch_url(f"{server}/ok.png", LOCAL).startswith(b"\x89PNG")


def test_redirects_are_rechecked(server):
    _Handler.seen.clear()
    for path in ("/to-metadata", "/to-private"):
        with pytest.raises(FetchError) as err:
            fetch_url(f"{server}{path}", LOCAL)
        assert err.value.reason == "url_blocked_address"
    assert fetch_url(f"{server}/to-ok", LOCAL).startswith(b"\x89PNG")
    with pytest.raises(FetchError) as err:
        fetch_url(f"{server}/loop", LOCAL)
    assert err.value.reason == "url_too_many_redirects"


@pytest.mark.parametrize("path", ["/big", "/big-chunked"])
def test_byte_cap(server, path):
    with pytest.raises(FetchError) as err:
        fetch_url(f"{server}{path}", LOCAL)
    assert err.value.reason == "url_too_large" and err.value.status == 413


def test_timeout(server):
    started = time.monotonic()
    with pytest.raises(FetchError) as err:
        fetch_url(f"{server}/slow", LOCAL.model_copy(update={"timeout_s": 0.5}))
    assert err.value.reason == "url_timeout"
    assert time.monotonic() - started < 2.5


def test_http_error_status(server):
    with pytest.raises(FetchError) as err:
        fetch_url(f"{server}/missing.png", LOCAL)
    assert err.value.reason == "url_http_status" and "404" in str(err.value)


def test_unreachable_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]          # closed again: nothing listens there
    with pytest.raises(FetchError) as err:
        fetch_url(f"http://127.0.0.1:{port}/x.png", LOCAL)
    assert err.value.reason == "url_unreachable"


@pytest.mark.parametrize("url,reason", [
    ("file:///etc/passwd", "url_scheme"), ("ftp://8.8.8.8/x", "url_scheme"),
    ("gopher://127.0.0.1:6379/_", "url_scheme"), ("http:///nohost", "url_invalid"),
    ("http://user:pw@8.8.8.8/x.png", "url_invalid"), ("http://8.8.8.8:99999/x", "url_invalid"),
    ("not a url", "url_scheme")])
def test_malformed_urls(url, reason):
    with pytest.raises(FetchError) as err:
        fetch_url(url, FetchConfig())
    assert err.value.reason == reason and 400 <= err.value.status < 500


def test_unresolvable_host(fake_dns):
    with pytest.raises(FetchError) as err:
        fetch_url("http://no-such-host.invalid/x.png", FetchConfig())
    assert err.value.reason == "url_unresolvable"


# ---------------------------------------------------------------------- one deadline per URL
def _timed(call):
    start = time.perf_counter()
    with pytest.raises(FetchError) as err:
        call()
    return err.value, time.perf_counter() - start


def test_trickled_headers_are_cut_off_at_the_deadline(server):
    """Headers arriving a line every 0.1 s never trip a per-read timeout; the deadline ends it."""
    err, seconds = _timed(lambda: fetch_url(f"{server}/trickle-headers",
                                            LOCAL.model_copy(update={"timeout_s": 1.0})))
    assert err.reason == "url_timeout" and 0.9 < seconds < 1.0 + 8  # the server trickles for 30 s


def test_endless_body_is_cut_off_by_deadline_or_byte_cap(server):
    slow, seconds = _timed(lambda: fetch_url(f"{server}/endless-slow", LOCAL.model_copy(
        update={"timeout_s": 1.0, "max_bytes": 50_000_000})))
    assert slow.reason == "url_timeout" and seconds < 1.0 + 8
    fast, seconds = _timed(lambda: fetch_url(f"{server}/endless-fast", LOCAL.model_copy(
        update={"timeout_s": 5.0, "max_bytes": 200_000})))
    assert fast.reason == "url_too_large" and fast.status == 413 and seconds < 5.0 + 8


def test_dns_that_hangs_is_cut_off_at_the_deadline(monkeypatch):
    def hanging(host, port, *args, **kwargs):
        time.sleep(3)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", hanging)
    err, seconds = _timed(lambda: fetch_url("http://slow-dns.example/a.png",
                                            FetchConfig(timeout_s=0.5)))
    assert err.reason == "url_timeout" and seconds < 0.5 + 2  # the lookup sleeps 3 s


@pytest.mark.parametrize("url, host_header, target", [
    ("http://[2001:db8::7]/a.png", "[2001:db8::7]", "http://[2001:db8::7]:80/a.png"),
    ("http://[2001:db8::7]:8080/a.png", "[2001:db8::7]:8080", "http://[2001:db8::7]:8080/a.png"),
    ("http://127.0.0.1:8080/a.png", "127.0.0.1:8080", "http://127.0.0.1:8080/a.png"),
])
def test_ipv6_hosts_are_bracketed_in_the_host_header(url, host_header, target):
    """RFC 9110 §7.2: an IPv6 literal in Host is bracketed (no connection is made here)."""
    assert checked_target(url, FetchConfig(allow_private=True))[:2] == (target, host_header)
