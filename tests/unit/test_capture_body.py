"""Request bodies: every encoding the supported SDKs send, and hostile ones."""

from __future__ import annotations

import base64
import gzip
import os
import zlib
from urllib.parse import quote

import orjson
import pytest

from capture import posthog_format, segment_format
from capture.body import BodyProblem, Decoded, decode_body
from capture.credentials import header_key

LIMIT = 1024 * 1024
DOC = b'{"batch":[{"type":"track","event":"e","userId":"u"}]}'


def decode(raw: bytes, ctype: str = "application/json", enc: str = "", comp: str = "") -> object:
    return decode_body(
        raw, content_type=ctype, content_encoding=enc, compression=comp, max_decoded_bytes=LIMIT
    )


def doc_of(outcome: object) -> object:
    assert isinstance(outcome, Decoded), outcome
    return orjson.loads(outcome.data)


def read(raw: bytes, fmt: object = segment_format) -> object:
    """A body decoded, then read by a wire format (what the handler does with it)."""
    out = decode(raw)
    if isinstance(out, BodyProblem):
        return out
    return fmt.parse(out.data, "batch")  # type: ignore[attr-defined]


def problem(outcome: object) -> tuple[int, str]:
    assert isinstance(outcome, BodyProblem), outcome
    return outcome.status, outcome.code


def test_plain_json_with_the_content_types_sdks_use() -> None:
    for ctype in ("application/json", "application/json; charset=utf-8", "text/plain", ""):
        assert doc_of(decode(DOC, ctype))["batch"][0]["event"] == "e"  # type: ignore[index]


def test_gzip_by_header_by_magic_bytes_and_posthog_gzip_js() -> None:
    packed = gzip.compress(DOC)
    encodings = [
        decode(packed, enc="gzip"),
        decode(packed),
        decode(packed, "text/plain", comp="gzip-js"),
        decode(zlib.compress(DOC), enc="deflate"),
        decode(DOC),
    ]
    assert [getattr(d, "encoding", None) for d in encodings] == [
        "gzip",
        "gzip",
        "gzip-js",
        "deflate",
        "identity",
    ]
    assert doc_of(decode(packed, enc="gzip")) == doc_of(decode(DOC))
    assert doc_of(decode(packed)) == doc_of(decode(DOC))  # no header: magic bytes
    assert doc_of(decode(packed, "text/plain", comp="gzip-js")) == doc_of(decode(DOC))
    assert doc_of(decode(zlib.compress(DOC), enc="deflate")) == doc_of(decode(DOC))


def test_browser_encodings_we_do_not_test_with_posthog_js_are_415() -> None:
    b64 = base64.b64encode(DOC).decode()
    form = ("data=" + quote(b64)).encode()
    assert problem(decode(form, "application/x-www-form-urlencoded")) == (
        415,
        "unsupported_encoding",
    )
    assert problem(decode(b64.encode(), "text/plain", comp="base64")) == (
        415,
        "unsupported_encoding",
    )


def test_json_labelled_as_a_form_is_read_as_json() -> None:
    """RudderStack's Node SDK (3.x, axios) sends gzip'd JSON batches labelled
    application/x-www-form-urlencoded; a real form (`data=...`) is still 415."""
    form = "application/x-www-form-urlencoded"
    gzipped = decode(gzip.compress(DOC), form, enc="gzip")
    assert isinstance(gzipped, Decoded) and gzipped.encoding == "gzip"
    assert doc_of(gzipped) == doc_of(decode(DOC))
    assert doc_of(decode(b" \n" + DOC, form)) == doc_of(decode(DOC))
    assert doc_of(decode(b"[]", form)) == []
    for not_json in (b"data=%7B%7D", b"a=1&b=2", b"=", b"x"):
        assert problem(decode(not_json, form)) == (415, "unsupported_encoding"), not_json
        assert problem(decode(gzip.compress(not_json), form, enc="gzip")) == (
            415,
            "unsupported_encoding",
        )


def test_invalid_and_truncated_gzip_are_400() -> None:
    assert problem(decode(b"\x1f\x8bnot gzip at all", enc="gzip")) == (400, "invalid_compression")
    truncated = gzip.compress(DOC)[:-12]
    assert problem(decode(truncated, enc="gzip")) == (400, "invalid_compression")


def test_a_gzip_body_of_several_members_is_read_whole_and_trailing_bytes_refused() -> None:
    half = len(DOC) // 2
    members = gzip.compress(DOC[:half]) + gzip.compress(DOC[half:])
    decoded = decode(members, enc="gzip")
    assert isinstance(decoded, Decoded) and decoded.data == DOC
    for tail in (b"junk", b"\x1f\x8bnot a member", b"\x00" * 8):
        said = decode(gzip.compress(DOC) + tail, enc="gzip")
        assert problem(said) == (400, "invalid_compression"), tail
    # The decoded limit holds over all members together.
    many = gzip.compress(b" " * (LIMIT // 2)) * 3
    assert problem(decode(many, enc="gzip")) == (413, "payload_too_large")


def test_a_gzip_bomb_stops_at_the_decoded_limit() -> None:
    bomb = gzip.compress(b"[" + b" " * (50 * LIMIT) + b"]")
    assert len(bomb) < LIMIT // 10
    assert problem(decode(bomb, enc="gzip")) == (413, "payload_too_large")


def test_truncated_or_non_json_bodies_are_400_with_the_parser_reason() -> None:
    for fmt in (segment_format, posthog_format):
        out = read(DOC[:-5], fmt)
        assert problem(out) == (400, "invalid_json")
        assert isinstance(out, BodyProblem) and "JSON" in out.message
        assert problem(read(os.urandom(64).replace(b"\x1f", b"x"), fmt)) == (400, "invalid_json")
        assert problem(read(b"[" * 5000 + b"]" * 5000, fmt)) == (400, "invalid_json")  # too deep
    assert problem(decode(b"")) == (400, "invalid_request")
    # Values pass through as raw JSON text, which the JSON decoder does not check: the
    # body as a whole must be UTF-8.
    latin1 = b'{"batch": [{"event": "caf\xe9", "userId": "u", "properties": {"x": "\xe9"}}]}'
    assert problem(decode(latin1)) == (400, "invalid_json")


@pytest.mark.parametrize("ctype", ["image/png", "multipart/form-data; boundary=x", "text/html"])
def test_wrong_content_types_are_415(ctype: str) -> None:
    assert problem(decode(DOC, ctype)) == (415, "unsupported_media_type")


def test_unsupported_encodings_are_415() -> None:
    assert problem(decode(DOC, enc="br")) == (415, "unsupported_encoding")
    assert problem(decode(DOC, comp="lz64")) == (415, "unsupported_encoding")


def test_write_key_from_basic_and_bearer_headers() -> None:
    basic = "Basic " + base64.b64encode(b"wk-123:").decode()
    assert header_key(basic) == "wk-123"
    assert header_key("Basic " + base64.b64encode(b":wk-456").decode()) == "wk-456"
    assert header_key("Bearer tok") == "tok"
    assert header_key("") is None
    assert header_key("Basic !!!notbase64") is None
    assert header_key("Digest abc") is None


def test_an_escaped_lone_surrogate_becomes_the_replacement_character() -> None:
    """JavaScript's JSON.stringify writes `\\ud83d` for a string cut inside an emoji; the
    JSON decoder refuses it, so it becomes U+FFFD and the request keeps all its events.
    Pairs and escaped backslashes are left as they are."""
    body = (
        b'{"batch":[{"type":"track","event":"cut \\ud83d","userId":"u"},'
        b'{"type":"track","event":"pair \\ud83d\\ude00 \\uD83D\\uDE00","userId":"u"},'
        b'{"type":"track","event":"text \\\\ud83d","userId":"u"},'
        b'{"type":"track","event":"low \\ude00 then \\\\\\udbff","userId":"u"}]}'
    )
    doc = doc_of(decode(body))
    names = [m["event"] for m in doc["batch"]]  # type: ignore[index]
    assert names == [
        "cut \ufffd",
        "pair \U0001f600 \U0001f600",
        "text \\ud83d",
        "low \ufffd then \\\ufffd",
    ]
    gz = doc_of(decode(gzip.compress(body), enc="gzip"))
    assert [m["event"] for m in gz["batch"]] == names  # type: ignore[index]
    parsed = read(body)
    assert not isinstance(parsed, BodyProblem) and len(parsed.items) == 4  # type: ignore[attr-defined]
    plain = decode(DOC)
    assert isinstance(plain, Decoded) and plain.data is DOC  # no escape: no copy


def test_a_leading_byte_order_mark_is_dropped() -> None:
    """RFC 8259 lets a reader ignore a BOM, which some Windows tools add; refusing it would
    lose the request. Only a leading one: a BOM inside a string is text."""
    bom = b"\xef\xbb\xbf"
    assert doc_of(decode(bom + DOC)) == orjson.loads(DOC)
    assert doc_of(decode(gzip.compress(bom + DOC), enc="gzip")) == orjson.loads(DOC)
    parsed = read(bom + DOC)
    assert not isinstance(parsed, BodyProblem) and len(parsed.items) == 1  # type: ignore[attr-defined]
    inside = DOC.replace(b'"e"', b'"\xef\xbb\xbfe"')
    assert doc_of(decode(inside))["batch"][0]["event"] == "\ufeffe"  # type: ignore[index]
    posthog = bom + b'{"api_key":"k","batch":[{"event":"e","distinct_id":"d"}]}'
    assert not isinstance(read(posthog, posthog_format), BodyProblem)


def test_an_unknown_compression_is_refused_not_read_as_json() -> None:
    """`?compression=zstd` with a zstd body would otherwise be parsed as JSON and refused
    as garbage (400); it is an unsupported encoding (415) that says which ones are."""
    status, code = problem(decode(b"(\xb5/\xfd...", comp="zstd"))
    assert (status, code) == (415, "unsupported_encoding")
    assert "zstd" in decode(DOC, comp="zstd").message  # type: ignore[union-attr]
    assert doc_of(decode(gzip.compress(DOC), comp="gzip"))["batch"][0]["event"] == "e"  # type: ignore[index]
