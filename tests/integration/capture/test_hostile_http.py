"""Hostile HTTP against a real capture process: the right 4xx every time, the service
stays up, and nothing reaches the wrong client's database."""

from __future__ import annotations

import base64
import gzip
import json
import socket
import time

import pytest
import requests

from analytics_core.clients import ClientStatus
from analytics_core.settings import Settings
from tests.conftest import ClientFixture, set_status, wait_for
from tests.integration.capture.conftest import CaptureProcess, rows, settle

pytestmark = pytest.mark.integration


def batch(*events: dict[str, object]) -> bytes:
    return json.dumps({"batch": list(events)}).encode()


def track(name: str = "e", **extra: object) -> dict[str, object]:
    return {"type": "track", "event": name, "userId": "u1", **extra}


def raw_exchange(port: int, data: bytes, *, read_timeout_s: float = 10) -> bytes:
    """Send raw bytes, return whatever the server answers before closing (or timing out)."""
    with socket.create_connection(("127.0.0.1", port), timeout=read_timeout_s) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while True:
                part = sock.recv(65536)
                if not part:
                    break
                chunks.append(part)
                if b"\r\n\r\n" in b"".join(chunks):
                    break
        except (TimeoutError, ConnectionResetError):
            pass
    return b"".join(chunks)


def status_of(answer: bytes) -> int | None:
    if not answer.startswith(b"HTTP/1.1 "):
        return None
    return int(answer[9:12])


def test_hostile_bodies_get_the_right_4xx_and_nothing_reaches_another_client(
    stack: Settings,
    capture: CaptureProcess,
    make_client,
    start_router,  # type: ignore[no-untyped-def]
) -> None:
    owner: ClientFixture = make_client("hown")
    victim: ClientFixture = make_client("hvic")
    start_router()
    auth = (owner.api_key, "")
    json_ct = {"Content-Type": "application/json"}

    def post(body: bytes, **kw: object) -> requests.Response:
        kw.setdefault("headers", json_ct)
        return capture.post("/v1/batch", body, auth=auth, **kw)  # type: ignore[arg-type]

    cases = {
        "invalid gzip": post(
            b"\x1f\x8b\x08garbage", headers={**json_ct, "Content-Encoding": "gzip"}
        ),
        "truncated gzip": post(
            gzip.compress(batch(track()))[:-10], headers={**json_ct, "Content-Encoding": "gzip"}
        ),
        "truncated JSON": post(batch(track())[:-7]),
        "not JSON": post(b"\xff\xfe<html>"),
        "10 MB body": post(b"[" + b" " * (10 * 2**20) + b"]"),
        "10 MB chunked body": post(iter([b" " * 2**20] * 10)),  # type: ignore[arg-type]
        "image content type": post(batch(track()), headers={"Content-Type": "image/png"}),
        "multipart": post(batch(track()), headers={"Content-Type": "multipart/form-data; b=x"}),
        "brotli": post(batch(track()), headers={**json_ct, "Content-Encoding": "br"}),
        "batch not an array": post(b'{"batch": {"a": 1}}'),
        "every event invalid": post(batch({"type": "track"}, "x", {"type": "nope"})),
    }
    expected = {
        "invalid gzip": 400,
        "truncated gzip": 400,
        "truncated JSON": 400,
        "not JSON": 400,
        "10 MB body": 413,
        "10 MB chunked body": 413,
        "image content type": 415,
        "multipart": 415,
        "brotli": 415,
        "batch not an array": 400,
        "every event invalid": 400,
    }
    assert {k: r.status_code for k, r in cases.items()} == expected
    for name, r in cases.items():
        body = r.json()
        assert body["code"] and body["message"] == body["detail"], name  # readable by all SDKs
    assert [x["index"] for x in cases["every event invalid"].json()["rejected"]] == [0, 1, 2]

    # Credentials: wrong key for an existing client, unknown key, none at all.
    wrong = capture.post("/v1/batch", batch(track()), auth=(victim.api_key + "x", ""))
    assert wrong.status_code == 401 and wrong.json()["code"] == "invalid_write_key"
    assert capture.post("/v1/batch", batch(track()), headers=json_ct).status_code == 401
    body_key = json.dumps({"batch": [track()], "writeKey": "nope"}).encode()
    assert capture.post("/v1/batch", body_key, headers=json_ct).status_code == 401

    # Another client's key in the body beside the owner's: the request claims two
    # identities and is refused whole (400), so nothing of it is stored anywhere.
    forged = track(
        "forged",
        client_id=victim.client_id,
        api_key=victim.api_key,
        writeKey=victim.api_key,
        ch_database_name=victim.database,
    )
    two_keys = post(batch(forged, track("fine")))
    assert two_keys.status_code == 400 and "Authorization header" in two_keys.text
    # Another client's id in an event: that event is refused by index, the rest kept.
    claims = track("claims", client_id=victim.client_id, ch_database_name=victim.database)
    ok = post(batch(claims, track("fine")))
    assert ok.status_code == 200 and ok.json()["accepted"] == 1
    assert [(x["index"], x["code"]) for x in ok.json()["rejected"]] == [(0, "wrong_client")]
    # A PostHog body naming the victim's key inside events, with the owner's key in front.
    ph = {
        "api_key": owner.api_key,
        "batch": [
            {"event": "ph-forged", "distinct_id": "u", "properties": {"token": victim.api_key}}
        ],
    }
    assert capture.post("/batch/", json.dumps(ph), headers=json_ct).status_code == 400
    # One bad event among good ones: the good ones are kept, the bad one is named.
    partial = post(batch(track("good-1"), {"type": "track", "userId": "u"}, track("good-2")))
    assert partial.status_code == 200
    assert partial.json()["accepted"] == 2
    assert [x["index"] for x in partial.json()["rejected"]] == [1]

    assert settle(stack, owner.database, 3) == (3, 3)
    names = sorted(r["event_name"] for r in rows(stack, owner.database))
    assert names == ["fine", "good-1", "good-2"]
    assert rows(stack, victim.database) == []
    assert capture.alive()
    assert requests.get(capture.url + "/healthz", timeout=5).status_code == 200


def test_inactive_unknown_and_pending_clients(
    stack: Settings,
    capture: CaptureProcess,
    make_client,  # type: ignore[no-untyped-def]
) -> None:
    gone: ClientFixture = make_client("hgone")
    set_status(stack, gone.client_id, ClientStatus.DEPROVISIONED)
    time.sleep(1.5)  # past the capture's 0.5 s local cache and 1 s verdict cache
    refused = capture.post("/v1/batch", batch(track()), auth=(gone.api_key, ""))
    assert refused.status_code == 403 and refused.json()["code"] == "client_inactive"
    # A pending client is being provisioned: its events are kept (the router holds them as
    # recoverable client_inactive dead letters until it is active).
    pending: ClientFixture = make_client("hpend", active=False)
    assert capture.post("/v1/batch", batch(track()), auth=(pending.api_key, "")).status_code == 200


def test_http_level_abuse_is_cut_off_and_the_service_stays_up(
    stack: Settings,
    start_capture,
    make_client,  # type: ignore[no-untyped-def]
) -> None:
    client: ClientFixture = make_client("habuse")
    cap: CaptureProcess = start_capture(
        CAPTURE_BODY_TIMEOUT_S="1", CAPTURE_HEADER_TIMEOUT_MS="1000"
    )
    port = cap.port
    # Huge headers: refused by the HTTP parser before any Python runs.
    huge = b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1024 * 1024) + b"\r\n\r\n"
    answer = raw_exchange(port, huge)
    assert status_of(answer) in (None, 400, 413, 431), answer[:200]
    # Past the documented 64 KiB but under hyper's own cut (~112 KiB): 431 from the app.
    big = b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (80 * 1024) + b"\r\n\r\n"
    assert status_of(raw_exchange(port, big)) == 431
    # Not HTTP at all.
    assert status_of(raw_exchange(port, b"\x16\x03\x01\x02\x00garbage\r\n\r\n")) in (None, 400)
    # Slow headers (slowloris): the connection is closed after the header timeout.
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(b"POST /v1/batch HTTP/1.1\r\nHost: x\r\n")
        data = sock.recv(1024)  # blocks until the server gives up on us
    assert time.monotonic() - started < 10
    assert status_of(data) in (None, 408)
    # A slow body: 408 after CAPTURE_BODY_TIMEOUT_S.
    head = (
        b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Content-Length: 1000\r\n\r\n{"batch": ['
    )
    assert status_of(raw_exchange(port, head, read_timeout_s=15)) == 408
    # Wrong methods and paths.
    assert requests.get(cap.url + "/v1/batch", timeout=5).status_code == 405
    assert cap.post("/admin", b"{}").status_code == 404
    # Still serving real traffic.
    assert cap.alive()
    good = cap.post("/v1/track", json.dumps(track()), auth=(client.api_key, ""))
    assert good.status_code == 200
    assert cap.metric("capture_requests_total", route="segment:batch", status="408") == 1
    # The latency histogram is body read to answer: the slow upload (408) is not in it, the
    # good request is.
    assert cap.metric("capture_request_duration_seconds_count", route="segment") == 1


def test_idle_keep_alive_connections_never_lock_new_clients_out(
    stack: Settings,
    start_capture,
    make_client,  # type: ignore[no-untyped-def]
) -> None:
    """Idle keep-alive connections (browsers, SDK pools) past the number of requests that
    may be in progress must not keep new clients waiting: they did, for as long as the
    idle ones stayed open, when that number was granian's backpressure (which counts
    connections). Requests in progress past CAPTURE_MAX_CONCURRENT_REQUESTS get 503 with
    Retry-After, and are served again once the others are done."""
    client: ClientFixture = make_client("keepalive")
    cap: CaptureProcess = start_capture(
        CAPTURE_MAX_CONCURRENT_REQUESTS="4", CAPTURE_BODY_TIMEOUT_S="20"
    )
    body = batch(track())
    auth = base64.b64encode(f"{client.api_key}:".encode()).decode()
    request = (
        f"POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: Basic {auth}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    idle: list[socket.socket] = []
    try:
        for _ in range(12):  # three times the request limit, each left open after a 200
            sock = socket.create_connection(("127.0.0.1", cap.port), timeout=10)
            sock.sendall(request)
            answer = sock.recv(65536)
            assert status_of(answer) == 200, answer[:200]
            idle.append(sock)
        started = time.monotonic()
        fresh = cap.post("/v1/batch", body, auth=(client.api_key, ""), timeout=10)
        assert fresh.status_code == 200, fresh.text
        assert time.monotonic() - started < 2
        # Four requests in progress (bodies still arriving): the fifth is refused at once.
        head = request.split(b"\r\n\r\n")[0] + b"\r\n\r\n"
        for _ in range(4):
            sock = socket.create_connection(("127.0.0.1", cap.port), timeout=10)
            sock.sendall(head + body[:5])
            idle.append(sock)
        wait_for(lambda: cap.metric("capture_inflight_requests") >= 5, 10, what="4 requests held")
        busy = cap.post("/v1/batch", body, auth=(client.api_key, ""), timeout=10)
        assert busy.status_code == 503, busy.text
        assert busy.json()["code"] == "overloaded" and "in progress" in busy.json()["message"]
        assert int(busy.headers["Retry-After"]) >= 1
    finally:
        for sock in idle:
            sock.close()
    wait_for(
        lambda: cap.post("/v1/batch", body, auth=(client.api_key, "")).status_code == 200,
        20,
        what="requests served again once the held ones are gone",
    )
    assert cap.alive()


def test_the_in_flight_budget_counts_bytes_received_not_bytes_declared(
    stack: Settings,
    start_capture,
    make_client,  # type: ignore[no-untyped-def]
) -> None:
    """Connections that declare large bodies and send one byte, with no key, must not lock
    every client out (they did: the declared length was reserved for the body timeout);
    bytes really held still count, and past the budget the answer is 503 with Retry-After."""
    client: ClientFixture = make_client("inflight")
    cap: CaptureProcess = start_capture(CAPTURE_MAX_INFLIGHT_MB="1", CAPTURE_BODY_TIMEOUT_S="20")
    head = b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    idle = []
    try:
        for _ in range(20):  # each declares all but 6 bytes of the budget (1 MiB)
            sock = socket.create_connection(("127.0.0.1", cap.port), timeout=10)
            sock.sendall(head + b"Content-Length: 1048570\r\n\r\n{")
            idle.append(sock)
        time.sleep(0.5)
        good = cap.post("/v1/track", json.dumps(track()), auth=(client.api_key, ""))
        assert good.status_code == 200, good.text
        # 900 000 bytes really held by one body, then a request of 200 000 more: over.
        held = socket.create_connection(("127.0.0.1", cap.port), timeout=10)
        idle.append(held)
        held.sendall(head + b"Content-Length: 1000000\r\n\r\n" + b" " * 900_000)
        time.sleep(0.5)
        big = {**track(), "properties": {"pad": "x" * 200_000}}
        busy = cap.post("/v1/track", json.dumps(big), auth=(client.api_key, ""))
        assert busy.status_code == 503 and busy.json()["code"] == "overloaded", busy.text
        assert int(busy.headers["Retry-After"]) >= 1
    finally:
        for sock in idle:
            sock.close()
    # Given back once those connections are gone.
    wait_for(lambda: cap.metric("capture_inflight_bytes") == 0, 30, what="the budget back")
    again = cap.post("/v1/track", json.dumps(track()), auth=(client.api_key, ""))
    assert again.status_code == 200 and cap.alive()


def _basic(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


def _send_and_close(port: int, data: bytes, *, half_close: bool = True) -> bytes:
    """Send, half-close (the client is done sending) unless told not to, and read until
    the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        try:
            while part := sock.recv(65536):
                chunks.append(part)
        except (TimeoutError, ConnectionResetError):
            pass
    return b"".join(chunks)


def test_cut_bodies_two_keys_and_declared_sizes(
    stack: Settings,
    capture: CaptureProcess,
    make_client,
    start_router,  # type: ignore[no-untyped-def]
) -> None:
    """A body cut short by its client is never processed (RFC 9112: an incomplete message);
    two Authorization headers are refused; a declared size over the limit is answered
    before the body is read."""
    owner: ClientFixture = make_client("hcut")
    other: ClientFixture = make_client("hcut2")
    start_router()
    port = capture.port
    head = (
        "POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: {_basic(owner.api_key)}\r\n"
    )
    cut = batch(track("cut_short"))
    closed = capture.metric("capture_requests_total", route="segment:batch", status="499")
    # Content-Length says 500 bytes more than the client sends before it stops.
    _send_and_close(port, f"{head}Content-Length: {len(cut) + 500}\r\n\r\n".encode() + cut)
    # A chunked body without its last (zero) chunk.
    chunk = f"{len(cut):x}\r\n".encode() + cut + b"\r\n"
    _send_and_close(port, f"{head}Transfer-Encoding: chunked\r\n\r\n".encode() + chunk)
    wait_for(
        lambda: (
            capture.metric("capture_requests_total", route="segment:batch", status="499")
            == closed + 2
        ),
        10,
        what="both cut-short requests counted as 499",
    )
    # Two Authorization headers, each a valid key: 400, nothing lands for either client.
    two_keys = batch(track("two_keys"))
    second = f"Authorization: {_basic(other.api_key)}\r\nConnection: close\r\n"
    answer = _send_and_close(
        port,
        f"{head}{second}Content-Length: {len(two_keys)}\r\n\r\n".encode() + two_keys,
        half_close=False,
    )
    assert status_of(answer) == 400 and b"more than one Authorization" in answer, answer[:300]
    # A declared body over the limit: 413 at once, before any of it is sent.
    started = time.monotonic()
    answer = raw_exchange(port, f"{head}Content-Length: 99999999\r\n\r\n".encode())
    assert status_of(answer) == 413 and time.monotonic() - started < 2, answer[:200]
    # A complete request after them lands; the cut-short and two-key events never do.
    ok = capture.post("/v1/batch", batch(track("after")), auth=(owner.api_key, ""))
    assert ok.status_code == 200
    assert settle(stack, owner.database, 1) == (1, 1)
    assert [r["event_name"] for r in rows(stack, owner.database)] == ["after"]
    assert rows(stack, other.database) == []
