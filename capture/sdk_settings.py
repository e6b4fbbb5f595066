"""What browser SDKs load from their host before they send anything (pure).

Segment: analytics-next (`AnalyticsBrowser.load({writeKey, cdnURL})`) first GETs
`<cdnURL>/v1/projects/<writeKey>/settings` and does not start without an answer; Segment's
CDN serves it. Pointed at this service (`cdnURL: "https://capture.example"`), it gets a
document whose only destination is this service's Segment API, so a page needs that one
URL changed and nothing else. Invariants:
- the document names no other host: no destination, plugin or metrics endpoint of
  Segment's (`metrics.sampleRate` 0), so a browser sends only to this service;
- it is the same for every write key but for the key itself (`apiKey`, which the SDK
  sends back as its Basic auth user): no registry lookup answers an anonymous GET, and the
  key is checked, as always, when events arrive.

PostHog: posthog-js first GETs `<api_host>/array/<token>/config` (its remote config) and,
unless that says `hasFeatureFlags: false`, POSTs `/flags/?v=2`; without answers it still
sends, logging an error for each. This service has no feature flags, surveys, recordings
or site apps: the remote config says so (and offers only the compressions the body reader
takes), and `/flags` (and the older `/decide`) answers "no flags" to anyone, as the SDKs
read an empty answer (every flag off), again without a registry lookup.

RudderStack: its browser SDK (`@rudderstack/analytics-js`, `load(writeKey, dataPlaneUrl,
{configUrl})`) first GETs `<configUrl>/sourceConfig/?writeKey=...` and does not start
without a source: the answer is a source with no device-mode destinations and the SDK's
error and metrics reporting to RudderStack off, so it sends events to the data plane URL
(this service's Segment API) and nothing else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

import orjson

from analytics_core.settings import SettingsError

# A Host header as browsers send it: a DNS name or IPv4 address, or a bracketed IPv6
# address, each with an optional port. Nothing else is echoed into the document.
_HOST = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}))*"
    r"|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?"
)

_SETTINGS_PATH = re.compile(r"v1/projects/([\x21-\x2e\x30-\x7e]{1,256})/settings")
SEGMENT_SETTINGS = "segment:settings"
POSTHOG_CONFIG = "posthog:config"
POSTHOG_FLAGS = "posthog:flags"
RUDDERSTACK_CONFIG = "rudderstack:config"
_POSTHOG_CONFIG_PATH = re.compile(r"array/([\x21-\x2e\x30-\x7e]{1,256})/config")
_FLAGS_PATHS = frozenset({"flags", "decide"})
_RUDDERSTACK_CONFIG_PATH = "sourceConfig"
# The methods each document is served to (OPTIONS aside); posthog-js POSTs /flags.
METHODS = {
    SEGMENT_SETTINGS: ("GET", "HEAD"),
    POSTHOG_CONFIG: ("GET", "HEAD"),
    POSTHOG_FLAGS: ("POST", "GET", "HEAD"),
    RUDDERSTACK_CONFIG: ("GET", "HEAD"),
}


@dataclass(frozen=True, slots=True)
class SettingsRequest:
    """GET /v1/projects/<key>/settings, GET /array/<key>/config, /flags or /sourceConfig
    (these two with key "")."""

    kind: str  # one of METHODS' keys; the metrics' route label
    key: str


def settings_request(path: str) -> SettingsRequest | None:
    """The settings request a path (without its slashes around) asks for, or None."""
    if path in _FLAGS_PATHS:
        return SettingsRequest(POSTHOG_FLAGS, "")
    if path == _RUDDERSTACK_CONFIG_PATH:
        return SettingsRequest(RUDDERSTACK_CONFIG, "")
    for kind, pattern in (
        (SEGMENT_SETTINGS, _SETTINGS_PATH),
        (POSTHOG_CONFIG, _POSTHOG_CONFIG_PATH),
    ):
        matched = pattern.fullmatch(path)
        if matched is not None:
            return SettingsRequest(kind, matched.group(1))
    return None


def parse_public_url(name: str, raw: str) -> str:
    """CAPTURE_PUBLIC_URL as the base the SDK sends to ("https://host[:port][/prefix]",
    no trailing slash), or "" when unset; a SettingsError saying what to fix otherwise."""
    value = raw.strip()
    if not value:
        return ""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SettingsError(
            f"{name}={raw!r}: give the URL browsers reach this service at, "
            "e.g. https://collect.example.com"
        )
    if parts.query or parts.fragment or "@" in parts.netloc:
        raise SettingsError(f"{name}={raw!r}: no query, fragment or user name in it")
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def public_base(configured: str, scheme: str, host: str | None) -> str | None:
    """Where browsers reach this service: CAPTURE_PUBLIC_URL when set, else the request's
    own scheme and Host header; None when there is no usable Host header."""
    if configured:
        return configured
    if host is None or _HOST.fullmatch(host) is None:
        return None
    return f"{'https' if scheme == 'https' else 'http'}://{host}"


def document(base: str, write_key: str) -> bytes:
    """The settings analytics-next needs to send its events to `base`'s Segment API."""
    scheme, _, rest = base.partition("://")
    segment_io = {"apiKey": write_key, "apiHost": f"{rest}/v1", "protocol": scheme}
    doc = {
        "integrations": {"Segment.io": segment_io},
        "plan": {},
        "edgeFunction": {},
        "analyticsNextEnabled": True,
        "middlewareSettings": {},
        "enabledMiddleware": {},
        "metrics": {"sampleRate": 0},
        "legacyVideoPluginsEnabled": False,
        "remotePlugins": [],
    }
    return orjson.dumps(doc)


def posthog_config(token: str) -> bytes:
    """posthog-js's remote config: nothing but capture here, compressed as the body
    reader takes it (gzip; never base64, which it refuses)."""
    doc = {
        "token": token,
        "supportedCompression": ["gzip", "gzip-js"],
        "hasFeatureFlags": False,
        "autocapture_opt_out": False,
        "autocaptureExceptions": False,
        "captureDeadClicks": False,
        "capturePerformance": False,
        "heatmaps": False,
        "sessionRecording": False,
        "surveys": False,
        "siteApps": [],
        "elementsChainAsString": True,
    }
    return orjson.dumps(doc)


NO_FLAGS = orjson.dumps(
    {
        "flags": {},
        "featureFlags": {},
        "featureFlagPayloads": {},
        "errorsWhileComputingFlags": False,
        "quotaLimited": [],
    }
)

# RudderStack's source config, the same for every write key (the SDK reads no key from it).
RUDDERSTACK_SOURCE = orjson.dumps(
    {
        "isHosted": False,
        "source": {
            "id": "capture",
            "name": "capture",
            "workspaceId": "capture",
            "enabled": True,
            "config": {
                "statsCollection": {"errors": {"enabled": False}, "metrics": {"enabled": False}}
            },
            "destinations": [],
        },
    }
)
