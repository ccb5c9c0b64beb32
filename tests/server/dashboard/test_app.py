"""The live view's HTTP surface with starlette's TestClient: the page, /api/status, /live, the guard
(loopback only without a token; the token on every request with one) and the response headers."""

from __future__ import annotations

import json

import pytest
from starlette.testclient import TestClient

from server.dashboard.app import COOKIE, cookie_value, create_app, is_loopback
from shared.errors import InputError
from shared.runs import RunFolder

LOCAL = {"base_url": "http://127.0.0.1:8765", "client": ("127.0.0.1", 50000)}
TOKEN = "s3cret-token-for-tests-0123456789"


@pytest.fixture
def empty_run(tmp_path):
    (tmp_path / "run").mkdir()
    return tmp_path / "run"


def test_an_empty_run_folder_is_served_as_waiting(empty_run) -> None:
    client = TestClient(create_app(empty_run), **LOCAL)
    page = client.get("/")
    assert page.status_code == 200 and 'id="notice"' in page.text and "row-level" in page.text
    assert "waiting for the run to start" in page.text and 'src="static/dashboard.js"' in page.text
    status = client.get("/api/status").json()
    assert status["phase"] == "waiting" and status["version"]
    assert client.get("/static/dashboard.js").status_code == 200
    for path in ("/docs", "/redoc", "/openapi.json"):  # nothing that would fetch scripts from the internet
        assert client.get(path).status_code == 404


def test_every_response_carries_the_security_headers(empty_run) -> None:
    client = TestClient(create_app(empty_run), **LOCAL)
    for path in ("/", "/api/status", "/live", "/static/dashboard.css"):
        headers = client.get(path).headers
        assert "script-src 'self'" in headers["content-security-policy"]
        assert headers["x-frame-options"] == "DENY" and headers["cache-control"] == "no-store"


def test_without_a_token_only_loopback_clients_under_a_loopback_name_are_served(empty_run) -> None:
    app = create_app(empty_run)
    for client, host in ((("192.0.2.7", 4000), "127.0.0.1:8765"), (("testclient", 1), "127.0.0.1:8765")):
        refused = TestClient(app, base_url=f"http://{host}", client=client).get("/api/status")
        assert refused.status_code == 403 and "serves this machine only" in refused.text
    rebound = TestClient(app, base_url="http://evil.example:8765", client=("127.0.0.1", 4000)).get("/")
    assert rebound.status_code == 403 and "Host header" in rebound.text
    for host in ("localhost:8765", "[::1]:8765", "127.0.0.1"):
        served = TestClient(app, base_url="http://127.0.0.1", client=("::1", 4000)).get("/", headers={"host": host})
        assert served.status_code == 200


def test_with_a_token_every_request_carries_it_by_header_or_by_a_cookie_set_once(empty_run) -> None:
    app = create_app(empty_run, token=TOKEN)
    remote = {"base_url": "http://192.0.2.2:8765", "client": ("192.0.2.9", 4000)}
    client = TestClient(app, **remote, follow_redirects=False)
    assert client.get("/api/status").status_code == 403
    assert client.get("/api/status", headers={"Authorization": "Bearer wrong-token-wrong-token"}).status_code == 403
    assert client.get("/api/status?token=wrong").status_code == 403
    assert client.get("/api/status", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    # ?token= once: a redirect to the same page without it, and a cookie holding a digest of the token
    once = client.get(f"/?token={TOKEN}&x=1")
    assert once.status_code == 303 and once.headers["location"] == "/?x=1"
    cookie = once.cookies[COOKIE]
    assert cookie == cookie_value(TOKEN) and TOKEN not in cookie
    assert "httponly" in once.headers["set-cookie"].lower() and "samesite=strict" in once.headers["set-cookie"].lower()
    assert client.get("/api/status").status_code == 200  # the client kept the cookie
    # loopback clients need it too once a token is set
    assert TestClient(app, **LOCAL).get("/").status_code == 403


def test_a_broken_file_answers_503_with_the_file_named_and_the_page_still_loads(empty_run) -> None:
    client = TestClient(create_app(empty_run), **LOCAL)
    RunFolder(empty_run).settings.write_text("{broken")
    status = client.get("/api/status")
    assert status.status_code == 503 and "run.json: cannot read it as JSON" in status.json()["error"]
    page = client.get("/")
    assert page.status_code == 200 and "Cannot read the run folder right now" in page.text


def test_a_bad_folder_or_setting_is_refused_when_the_app_is_made(tmp_path) -> None:
    with pytest.raises(InputError, match="no such run folder"):
        create_app(tmp_path / "missing")
    with pytest.raises(ValueError, match="refresh_seconds"):
        create_app(tmp_path, refresh_seconds=0)


def test_loopback_addresses() -> None:
    assert all(map(is_loopback, ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "::ffff:127.0.0.1")))
    assert not any(map(is_loopback, ("0.0.0.0", "192.0.2.2", "::", "example.org", None, "testclient")))


@pytest.mark.slow
def test_a_finished_run_renders_its_charts_audit_and_evaluation(finished_run) -> None:
    client = TestClient(create_app(finished_run), **LOCAL)
    page = client.get("/").text
    for site in ("site-1", "site-2"):
        assert f'id="eps-line-{site}"' in page and f'id="budget-line-{site}"' in page
    assert 'id="loss-line"' in page and "VERIFIED" in page and 'id="evaluation-table"' in page
    status = client.get("/api/status").json()
    assert status["phase"] == "finished" and json.loads(json.dumps(status)) == status
    assert client.get("/live").text.startswith('<div id="live-root"')
