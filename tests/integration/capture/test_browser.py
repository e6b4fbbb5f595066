"""A real browser: headless Chromium (Debian) loads a page served locally, on another origin
than the capture service, that sends events with a browser SDK from npm; they land in the
client's ClickHouse database. posthog-js's own transports are used unchanged (fetch with
CORS for batches, sendBeacon), with its gzip-js compression; Segment's analytics-next loads
its settings from the capture service (only `cdnURL` changed) and sends where they say;
RudderStack's analytics-js loads its source config from it (`configUrl`) and sends to it
as its data plane."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from analytics_core.settings import Settings
from tests.conftest import ClientFixture
from tests.integration.capture.conftest import CaptureProcess, rows, wait_rows

pytestmark = pytest.mark.integration

POSTHOG_JS_VERSION = "1.449.2"
POSTHOG_JS = (
    Path.home()
    / ".cache"
    / "analytics-pipeline"
    / f"posthog-js-{POSTHOG_JS_VERSION}"
    / "array.full.no-external.js"
)
ANALYTICS_NEXT_VERSION = "1.84.3"
ANALYTICS_NEXT = (
    Path.home()
    / ".cache"
    / "analytics-pipeline"
    / f"analytics-next-{ANALYTICS_NEXT_VERSION}"
    / "index.js"
)
RUDDERSTACK_JS_VERSION = "3.34.1"
RUDDERSTACK_JS = (
    Path.home()
    / ".cache"
    / "analytics-pipeline"
    / f"rudderstack-analytics-js-{RUDDERSTACK_JS_VERSION}"
    / "index.js"
)
PAGES = Path(__file__).resolve().parents[2] / "fixtures" / "capture" / "browser"
# What the page server serves: path -> (file, content type, filled in with the values).
SERVED = {
    "/posthog.js": (POSTHOG_JS, "application/javascript", False),
    "/analytics-next.js": (ANALYTICS_NEXT, "application/javascript", False),
    "/rudderstack.js": (RUDDERSTACK_JS, "application/javascript", False),
    "/rudderstack.html": (PAGES / "rudderstack_js_page.html", "text/html; charset=utf-8", True),
    "/page.html": (PAGES / "posthog_js_page.html", "text/html; charset=utf-8", True),
    "/defaults.html": (
        PAGES / "posthog_js_defaults_page.html",
        "text/html; charset=utf-8",
        True,
    ),
    "/segment.html": (
        PAGES / "segment_analytics_next_page.html",
        "text/html; charset=utf-8",
        True,
    ),
}
# What Chromium needs on these machines (no sandbox as root, no background networking on a
# closed network): see the machine notes in the developers' library.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def require_tools(sdk: Path, name: str) -> str:
    chromium = shutil.which("chromium")
    missing = []
    if chromium is None:
        missing.append("Debian's chromium (apt-get install chromium)")
    if not sdk.is_file():
        missing.append(f"{name} at {sdk}")
    if missing:
        pytest.fail(
            "missing " + " and ".join(missing) + ": run bin/setup (bin/setup.d/40-capture.sh)"
        )
    assert chromium is not None
    return chromium


@contextlib.contextmanager
def browser_on(chromium: str, url: str, tmp_path: Path) -> Iterator[None]:
    """Chromium showing `url` while the block runs (its log in tmp_path)."""
    browser = subprocess.Popen(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", url],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "chromium.log").open("wb"),
    )
    try:
        yield
    finally:
        browser.terminate()
        try:
            browser.wait(15)
        except subprocess.TimeoutExpired:
            browser.kill()
            browser.wait()


@pytest.fixture
def page_server(capture: CaptureProcess) -> Iterator[tuple[ThreadingHTTPServer, dict[str, str]]]:
    values: dict[str, str] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            served = SERVED.get(self.path.split("?")[0])
            if served is None:
                self.send_response(404)
                self.end_headers()
                return
            path, ctype, fill = served
            body = path.read_bytes()
            if fill:
                text = body.decode()
                for name, value in values.items():
                    text = text.replace(name, value)
                body = text.encode()
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, values
    finally:
        server.shutdown()
        server.server_close()


Rows = dict[str, dict[str, Any]]


def gzipped_posthog_requests(capture: CaptureProcess) -> float:
    return sum(
        capture.metric("capture_request_encodings_total", route="posthog:e", encoding=enc)
        for enc in ("gzip", "gzip-js")
    )


@pytest.fixture
def browse(
    stack: Settings,
    capture: CaptureProcess,
    page_server,  # type: ignore[no-untyped-def]
    make_client,  # type: ignore[no-untyped-def]
    start_router,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> Callable[..., tuple[ClientFixture, str, Rows]]:
    """Chromium opens one of SERVED's pages for a new client until `least` (3) of its events
    have landed: the client, the page's URL and the rows by event name."""

    def run(page: str, sdk: Path, sdk_name: str, least: int = 3) -> tuple[ClientFixture, str, Rows]:
        chromium = require_tools(sdk, sdk_name)
        client: ClientFixture = make_client("web")
        start_router()
        server, values = page_server
        values.update({"__CAPTURE_URL__": capture.url, "__API_KEY__": client.api_key})
        # The page is served by 127.0.0.1 on another port: another origin, so CORS applies.
        url = f"http://127.0.0.1:{server.server_address[1]}{page}"
        with browser_on(chromium, url, tmp_path):
            wait_rows(stack, client.database, least, timeout_s=90)
        return client, url, {r["event_name"]: r for r in rows(stack, client.database)}

    return run


def test_posthog_js_in_headless_chromium_lands_in_clickhouse(
    capture: CaptureProcess,
    browse,  # type: ignore[no-untyped-def]
) -> None:
    client, url, found = browse("/page.html", POSTHOG_JS, f"posthog-js {POSTHOG_JS_VERSION}")
    assert {"$pageview", "browser_signup", "browser_beacon"} <= set(found)
    signup = json.loads(found["browser_signup"]["event_properties"])
    assert signup["plan"] == "pro" and signup["$lib"] == "web"
    assert signup["$current_url"] == url
    assert "token" not in signup and client.api_key not in json.dumps(list(found.values()))
    user = found["browser_signup"]["user_id"]
    assert user and all(r["user_id"] == user for r in found.values())  # one browser, one person
    # posthog-js compresses its bodies with gzip (its "gzip-js"): decoded, not refused.
    assert gzipped_posthog_requests(capture) >= 1


def test_posthog_js_with_its_defaults_loads_its_config_from_capture_and_sends(
    capture: CaptureProcess,
    browse,  # type: ignore[no-untyped-def]
) -> None:
    """As the README shows it (only api_host set): posthog-js loads its remote config from
    the capture service, which says there are no flags (so it asks for none) and offers
    gzip, and its events land."""
    config_before = capture.metric("capture_requests_total", route="posthog:config", status="200")
    flags_before = sum(
        capture.metric("capture_requests_total", route="posthog:flags", status=status)
        for status in ("200", "405")
    )
    gzip_before = gzipped_posthog_requests(capture)
    _, url, found = browse("/defaults.html", POSTHOG_JS, f"posthog-js {POSTHOG_JS_VERSION}", 2)
    assert {"$pageview", "defaults_signup"} <= set(found)
    signup = json.loads(found["defaults_signup"]["event_properties"])
    assert signup["plan"] == "team" and signup["$current_url"] == url
    config = capture.metric("capture_requests_total", route="posthog:config", status="200")
    assert config > config_before
    flags = sum(
        capture.metric("capture_requests_total", route="posthog:flags", status=status)
        for status in ("200", "405")
    )
    assert flags == flags_before  # hasFeatureFlags: false
    assert gzipped_posthog_requests(capture) > gzip_before  # as the config offered


def test_segment_analytics_next_loads_its_settings_from_capture_and_lands_in_clickhouse(
    capture: CaptureProcess,
    browse,  # type: ignore[no-untyped-def]
) -> None:
    name = f"@segment/analytics-next {ANALYTICS_NEXT_VERSION}"
    client, url, found = browse("/segment.html", ANALYTICS_NEXT, name)
    assert set(found) == {"$identify", "$page", "browser_signup"}
    assert all(r["user_id"] == "browser-user-7" for r in found.values())
    signup = json.loads(found["browser_signup"]["event_properties"])
    assert signup["plan"] == "pro" and signup["source"] == "chromium"
    assert signup["$context"]["library"]["name"] == "analytics.js"
    assert signup["$context"]["page"]["url"] == url
    page = json.loads(found["$page"]["event_properties"])
    assert page["$name"] == "Pricing"
    identify = json.loads(found["$identify"]["event_properties"])
    assert identify["$traits"] == {"plan": "pro"}
    assert client.api_key not in json.dumps(list(found.values()))
    # Its settings came from the capture service (nothing else serves them here), and its
    # events went to the Segment API they named, with the write key they carried.
    assert capture.metric("capture_requests_total", route="segment:settings", status="200") >= 1
    sent = sum(
        capture.metric("capture_requests_total", route=f"segment:{kind}", status="200")
        for kind in ("t", "p", "i", "track", "page", "identify", "batch", "b")
    )
    assert sent >= 3


def test_rudderstack_analytics_js_loads_its_source_config_from_capture_and_lands(
    capture: CaptureProcess,
    browse,  # type: ignore[no-untyped-def]
) -> None:
    name = f"@rudderstack/analytics-js {RUDDERSTACK_JS_VERSION}"
    client, url, found = browse("/rudderstack.html", RUDDERSTACK_JS, name)
    assert set(found) == {"$identify", "$page", "rs_signup"}
    assert all(r["user_id"] == "rs-user-3" for r in found.values())
    signup = json.loads(found["rs_signup"]["event_properties"])
    assert signup["plan"] == "team" and signup["source"] == "chromium"
    assert signup["$context"]["library"]["name"] == "RudderLabs JavaScript SDK"
    assert signup["$context"]["page"]["url"] == url
    assert signup["$channel"] == "web"
    # The device's time (originalTimestamp; no timestamp is sent): within the test's minute.
    sent_ms = found["rs_signup"]["ts"]
    assert abs(sent_ms - ms_of(signup["$originalTimestamp"])) < 60_000
    page = json.loads(found["$page"]["event_properties"])
    assert page["$name"] == "Pricing" and page["$category"] == "Docs"
    assert client.api_key not in json.dumps(list(found.values()))
    config = capture.metric("capture_requests_total", route="rudderstack:config", status="200")
    assert config >= 1


def ms_of(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)
