"""The guard over a real network: uvicorn listening on 0.0.0.0, asked through this machine's own
non-loopback address, so the server sees a non-loopback client as it would a remote one."""

from __future__ import annotations

import http.client
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import uvicorn

from server.dashboard.app import COOKIE, create_app, is_loopback

TOKEN = "remote-token-0123456789abcdef"


def non_loopback_ipv4() -> str | None:
    """An IPv4 address of this machine that is not loopback (`ip -4 addr`, else a UDP socket's
    source address, which sends nothing), or None."""
    try:
        out = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            address = line.split()[3].split("/")[0]
            if not is_loopback(address):
                return address
    except (OSError, IndexError, subprocess.SubprocessError):
        pass
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # no packet leaves: connect() on UDP only picks the route
            address = s.getsockname()[0]
            return None if is_loopback(address) or address == "0.0.0.0" else address
    except OSError:
        return None


ADDRESS = non_loopback_ipv4()
pytestmark = pytest.mark.skipif(ADDRESS is None, reason="this machine has no non-loopback IPv4 address")


@contextmanager
def serving(app) -> Iterator[int]:
    """Run ``app`` with uvicorn on 0.0.0.0 (a free port) in a thread; yield the port."""
    server = uvicorn.Server(uvicorn.Config(app, host="0.0.0.0", port=0, log_level="warning", proxy_headers=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def get(host: str, port: int, path: str, headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.request("GET", path, headers=headers or {})
    response = conn.getresponse()
    response.body = response.read()  # type: ignore[attr-defined]
    conn.close()
    return response


def test_without_a_token_a_client_on_the_network_is_refused_and_loopback_is_served(tmp_path) -> None:
    with serving(create_app(tmp_path)) as port:
        refused = get(ADDRESS, port, "/api/status")
        assert refused.status == 403 and b"serves this machine only" in refused.body
        assert get(ADDRESS, port, "/").status == 403
        assert get("127.0.0.1", port, "/api/status").status == 200


def test_with_a_token_a_client_on_the_network_needs_it_on_every_request(tmp_path) -> None:
    with serving(create_app(tmp_path, token=TOKEN)) as port:
        assert get(ADDRESS, port, "/api/status").status == 403
        assert get(ADDRESS, port, "/", {"Authorization": "Bearer not-the-token-at-all"}).status == 403
        assert get(ADDRESS, port, "/api/status", {"Authorization": f"Bearer {TOKEN}"}).status == 200
        once = get(ADDRESS, port, f"/?token={TOKEN}")
        assert once.status == 303 and once.getheader("location") == "/"
        cookie = once.getheader("set-cookie").split(";", 1)[0]
        assert cookie.startswith(f"{COOKIE}=") and TOKEN not in cookie
        page = get(ADDRESS, port, "/", {"Cookie": cookie})
        assert page.status == 200 and b'id="notice"' in page.body
        assert get("127.0.0.1", port, "/api/status").status == 403  # loopback too, once a token is set
