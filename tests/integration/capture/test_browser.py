"""A real browser: headless Chromium (Debian) loads a page served locally, on another origin
than the capture service, that sends events with posthog-js from npm; they land in the
client's ClickHouse database. posthog-js's own transports are used unchanged (fetch with
CORS for batches, sendBeacon), with its gzip-js compression."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

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
PAGE = (
    Path(__file__).resolve().parents[2]
    / "fixtures"
    / "capture"
    / "browser"
    / "posthog_js_page.html"
)
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


def require_tools() -> str:
    chromium = shutil.which("chromium")
    missing = []
    if chromium is None:
        missing.append("Debian's chromium (apt-get install chromium)")
    if not POSTHOG_JS.is_file():
        missing.append(f"posthog-js {POSTHOG_JS_VERSION} at {POSTHOG_JS}")
    if missing:
        pytest.fail(
            "missing " + " and ".join(missing) + ": run bin/setup (bin/setup.d/40-capture.sh)"
        )
    assert chromium is not None
    return chromium


@pytest.fixture
def page_server(capture: CaptureProcess) -> Iterator[tuple[ThreadingHTTPServer, dict[str, str]]]:
    values: dict[str, str] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/posthog.js"):
                body, ctype = POSTHOG_JS.read_bytes(), "application/javascript"
            elif self.path.startswith("/page.html"):
                text = PAGE.read_text()
                for name, value in values.items():
                    text = text.replace(name, value)
                body, ctype = text.encode(), "text/html; charset=utf-8"
            else:
                self.send_response(404)
                self.end_headers()
                return
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


def test_posthog_js_in_headless_chromium_lands_in_clickhouse(
    stack: Settings,
    capture: CaptureProcess,
    page_server,  # type: ignore[no-untyped-def]
    make_client,  # type: ignore[no-untyped-def]
    start_router,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    chromium = require_tools()
    client: ClientFixture = make_client("web")
    start_router()
    server, values = page_server
    values.update({"__CAPTURE_URL__": capture.url, "__API_KEY__": client.api_key})
    # The page is served by 127.0.0.1 on another port: another origin, so CORS applies.
    url = f"http://127.0.0.1:{server.server_address[1]}/page.html"
    browser = subprocess.Popen(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", url],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "chromium.log").open("wb"),
    )
    try:
        wait_rows(stack, client.database, 3, timeout_s=90)
    finally:
        browser.terminate()
        try:
            browser.wait(15)
        except subprocess.TimeoutExpired:
            browser.kill()
            browser.wait()
    found = {r["event_name"]: r for r in rows(stack, client.database)}
    assert {"$pageview", "browser_signup", "browser_beacon"} <= set(found)
    signup = json.loads(found["browser_signup"]["event_properties"])
    assert signup["plan"] == "pro" and signup["$lib"] == "web"
    assert signup["$current_url"] == url
    assert "token" not in signup and client.api_key not in json.dumps(list(found.values()))
    user = found["browser_signup"]["user_id"]
    assert user and all(r["user_id"] == user for r in found.values())  # one browser, one person
    # posthog-js compresses its bodies with gzip (its "gzip-js"): decoded, not refused.
    gzipped = sum(
        capture.metric("capture_request_encodings_total", route="posthog:e", encoding=enc)
        for enc in ("gzip", "gzip-js")
    )
    assert gzipped >= 1
