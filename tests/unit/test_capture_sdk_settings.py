"""What browser SDKs load from the capture service before they send (capture.sdk_settings):
analytics-next's settings, posthog-js's remote config and its flags; the pure parts, and
the answers of the ASGI app in process. The browser tests
(tests/integration/capture/test_browser.py) load them with the real SDKs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import MutableMapping
from typing import Any

import pytest

from analytics_core.settings import SettingsError
from capture.app import CaptureApp
from capture.config import CaptureSettings
from capture.routes import CaptureRoute, route_for
from capture.sdk_settings import (
    NO_FLAGS,
    POSTHOG_CONFIG,
    POSTHOG_FLAGS,
    RUDDERSTACK_CONFIG,
    RUDDERSTACK_SOURCE,
    SEGMENT_SETTINGS,
    SettingsRequest,
    document,
    parse_public_url,
    posthog_config,
    public_base,
    settings_request,
)


def test_the_settings_path_names_the_write_key() -> None:
    assert route_for("/v1/projects/demo-key-change-me/settings") == SettingsRequest(
        SEGMENT_SETTINGS, "demo-key-change-me"
    )
    assert route_for("v1/projects/k_~.-9/settings/") == SettingsRequest(SEGMENT_SETTINGS, "k_~.-9")
    assert route_for("/array/phc_1/config") == SettingsRequest(POSTHOG_CONFIG, "phc_1")
    assert route_for("/flags/") == route_for("/decide") == SettingsRequest(POSTHOG_FLAGS, "")
    assert route_for("/sourceConfig/") == SettingsRequest(RUDDERSTACK_CONFIG, "")
    # The capture routes and service paths are unchanged.
    assert route_for("/v1/batch") == CaptureRoute("segment", "batch")
    assert route_for("/metrics") == "metrics"


@pytest.mark.parametrize(
    "path",
    [
        "v1/projects//settings",
        "v1/projects/a/b/settings",
        "v1/projects/a b/settings",
        "v1/projects/a\x00b/settings",
        "v1/projects/é/settings",
        "v1/projects/" + "k" * 257 + "/settings",
        "v1/projects/key/settingsx",
        "v2/projects/key/settings",
        "array//config",
        "array/a/b/config",
        "array/key/config.js",
        "flags/x",
        "sourceconfig",
        "sourceConfig/x",
    ],
)
def test_anything_else_is_no_settings_path(path: str) -> None:
    assert settings_request(path) is None
    assert route_for(path) is None


@pytest.mark.parametrize(
    ("configured", "scheme", "host", "base"),
    [
        ("", "http", "127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("", "https", "collect.example.com", "https://collect.example.com"),
        ("", "http", "[::1]:8000", "http://[::1]:8000"),
        ("", "ws", "collect.example.com", "http://collect.example.com"),
        ("https://c.example:8443/in", "http", "evil.example", "https://c.example:8443/in"),
        ("https://c.example", "http", None, "https://c.example"),
        ("", "http", None, None),
        ("", "http", "", None),
        ("", "http", "evil.example/x", None),
        ("", "http", 'a"b', None),
        ("", "http", "a b", None),
        ("", "http", "user@host", None),
        ("", "http", "host:port", None),
    ],
)
def test_the_public_base(configured: str, scheme: str, host: str | None, base: str | None) -> None:
    assert public_base(configured, scheme, host) == base


def test_the_document_sends_only_to_the_base_with_the_key() -> None:
    doc = json.loads(document("https://c.example:8443/in", "k-1"))
    assert doc["integrations"] == {
        "Segment.io": {"apiKey": "k-1", "apiHost": "c.example:8443/in/v1", "protocol": "https"}
    }
    assert doc["metrics"] == {"sampleRate": 0}  # no metrics to Segment's own host
    assert doc["remotePlugins"] == [] and doc["enabledMiddleware"] == {}

    def strings(value: object) -> list[str]:
        if isinstance(value, dict):
            return [s for k, v in value.items() for s in [k, *strings(v)]]
        if isinstance(value, list):
            return [s for v in value for s in strings(v)]
        return [value] if isinstance(value, str) else []

    hosts = [s for s in strings(doc) if "." in s and s != "Segment.io"]
    assert hosts == ["c.example:8443/in/v1"]


def test_the_posthog_documents_offer_nothing_but_capture() -> None:
    config = json.loads(posthog_config("phc_1"))
    assert config["token"] == "phc_1"
    # posthog-js then loads no flags, and compresses only as the body reader reads.
    assert config["hasFeatureFlags"] is False
    assert config["supportedCompression"] == ["gzip", "gzip-js"]
    assert not any(config[k] for k in ("sessionRecording", "surveys", "heatmaps", "siteApps"))
    flags = json.loads(NO_FLAGS)
    assert flags["flags"] == flags["featureFlags"] == {}
    assert flags["errorsWhileComputingFlags"] is False


def test_the_rudderstack_source_has_no_destination_and_reports_nothing() -> None:
    doc = json.loads(RUDDERSTACK_SOURCE)["source"]
    # What the SDK checks before it starts (isValidSourceConfig), and nothing more.
    assert doc["id"] and doc["enabled"] is True and doc["destinations"] == []
    stats = doc["config"]["statsCollection"]
    assert stats == {"errors": {"enabled": False}, "metrics": {"enabled": False}}


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        ("", ""),
        ("  ", ""),
        ("https://collect.example.com/", "https://collect.example.com"),
        ("http://127.0.0.1:8000/capture/", "http://127.0.0.1:8000/capture"),
    ],
)
def test_capture_public_url(raw: str, parsed: str) -> None:
    assert parse_public_url("CAPTURE_PUBLIC_URL", raw) == parsed
    assert CaptureSettings.from_env({"CAPTURE_PUBLIC_URL": raw}).public_url == parsed


@pytest.mark.parametrize(
    "raw",
    ["collect.example.com", "ftp://c.example", "https://", "https://c.example/?a=1", "http://u@h"],
)
def test_a_bad_capture_public_url_fails_the_start_naming_it(raw: str) -> None:
    with pytest.raises(SettingsError, match="CAPTURE_PUBLIC_URL"):
        CaptureSettings.from_env({"CAPTURE_PUBLIC_URL": raw})


def call(
    app: CaptureApp, method: str, path: str, headers: list[tuple[bytes, bytes]]
) -> tuple[int, dict[str, str], bytes]:
    """One request through the ASGI app: status, headers, body."""
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "scheme": "http",
        "headers": headers,
    }
    asyncio.run(app(scope, receive, send))
    start, body = sent
    got = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], got, body["body"]


PATH = "/v1/projects/demo-key-change-me/settings"
ORIGIN = (b"origin", b"http://shop.example")


def test_the_app_serves_the_settings_with_cors_and_counts_them() -> None:
    app = CaptureApp(CaptureSettings())
    status, headers, body = call(app, "GET", PATH, [(b"host", b"127.0.0.1:8000"), ORIGIN])
    assert status == 200 and headers["content-type"] == "application/json"
    assert headers["access-control-allow-origin"] == "http://shop.example"
    assert headers["cache-control"] == "public, max-age=300"
    # It names the Host it was asked of: a shared cache keeps one copy per Host, so one
    # request with a forged Host can not poison it for everyone.
    assert call(app, "GET", PATH, [(b"host", b"h")])[1]["vary"] == "Host"
    segment_io = json.loads(body)["integrations"]["Segment.io"]
    assert segment_io == {
        "apiKey": "demo-key-change-me",
        "apiHost": "127.0.0.1:8000/v1",
        "protocol": "http",
    }
    assert call(app, "HEAD", PATH, [(b"host", b"h")])[0] == 200
    assert app.metrics.requests.values[("segment:settings", "200")] == 3


def test_the_configured_public_url_wins_over_the_host_header() -> None:
    app = CaptureApp(CaptureSettings(public_url="https://collect.example.com:8443"))
    _, _, body = call(app, "GET", PATH, [(b"host", b"capture:8000")])
    segment_io = json.loads(body)["integrations"]["Segment.io"]
    assert segment_io["apiHost"] == "collect.example.com:8443/v1"
    assert segment_io["protocol"] == "https"


@pytest.mark.parametrize(
    ("method", "headers", "status", "code"),
    [
        ("GET", [], 400, "bad_host"),
        ("GET", [(b"host", b"evil.example/x")], 400, "bad_host"),
        ("POST", [(b"host", b"h")], 405, "method_not_allowed"),
    ],
)
def test_refused_settings_requests_say_why(
    method: str, headers: list[tuple[bytes, bytes]], status: int, code: str
) -> None:
    app = CaptureApp(CaptureSettings())
    got, answer_headers, body = call(app, method, PATH, headers)
    assert got == status and json.loads(body)["code"] == code
    if status == 405:
        assert answer_headers["allow"] == "GET, HEAD, OPTIONS"
    assert app.metrics.requests.values[("segment:settings", str(status))] == 1


def test_the_app_serves_posthogs_config_and_flags() -> None:
    app = CaptureApp(CaptureSettings())
    status, headers, body = call(app, "GET", "/array/phc_1/config", [ORIGIN])
    assert status == 200 and json.loads(body)["token"] == "phc_1"
    assert headers["access-control-allow-origin"] == "http://shop.example"
    for method in ("POST", "GET"):
        status, headers, body = call(app, method, "/flags/", [ORIGIN])
        assert (status, body) == (200, NO_FLAGS) and headers["cache-control"] == "no-store"
    assert call(app, "POST", "/array/phc_1/config", [])[0] == 405
    status, headers, body = call(app, "GET", "/sourceConfig/", [ORIGIN])
    assert (status, body) == (200, RUDDERSTACK_SOURCE)
    assert headers["access-control-allow-origin"] == "http://shop.example"
    assert app.metrics.requests.values[(RUDDERSTACK_CONFIG, "200")] == 1
    assert app.metrics.requests.values[(POSTHOG_CONFIG, "200")] == 1
    assert app.metrics.requests.values[(POSTHOG_FLAGS, "200")] == 2
    assert app.metrics.requests.values[(POSTHOG_CONFIG, "405")] == 1


def test_a_preflight_of_the_settings_allows_get() -> None:
    app = CaptureApp(CaptureSettings())
    asked = (b"access-control-request-headers", b"x-custom")
    status, headers, _ = call(app, "OPTIONS", PATH, [ORIGIN, asked])
    assert status == 204
    assert headers["access-control-allow-methods"] == "GET, HEAD, OPTIONS"
    assert headers["access-control-allow-origin"] == "http://shop.example"


def test_the_null_origin_is_not_reflected_with_credentials_unless_listed() -> None:
    """Sandboxed frames and file: pages send `Origin: null`; with the default `*` it gets
    no CORS headers (reflecting it with credentials would let any sandboxed page in);
    listed by name, it does."""
    status, headers, _ = call(
        CaptureApp(CaptureSettings()), "GET", PATH, [(b"host", b"h"), (b"origin", b"null")]
    )
    assert status == 200 and "access-control-allow-origin" not in headers
    listed = CaptureApp(CaptureSettings.from_env({"CAPTURE_CORS_ORIGINS": "null"}))
    _, headers, _ = call(listed, "GET", PATH, [(b"host", b"h"), (b"origin", b"null")])
    assert headers["access-control-allow-origin"] == "null"


def test_answers_given_before_the_body_are_counted_under_a_bounded_route() -> None:
    """Preflights, wrong methods and unknown paths are in capture_requests_total too (the
    unknown paths under one label, "unknown", whatever the path)."""
    app = CaptureApp(CaptureSettings())
    assert call(app, "OPTIONS", "/v1/batch", [ORIGIN])[0] == 204
    assert call(app, "GET", "/v1/batch", [])[0] == 405
    assert call(app, "GET", "/nope", [])[0] == 404
    assert call(app, "GET", "/other/nope", [])[0] == 404
    counted = app.metrics.requests.values
    assert counted[("segment:batch", "204")] == 1 and counted[("segment:batch", "405")] == 1
    assert counted[("unknown", "404")] == 2
