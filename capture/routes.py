"""Which wire format a path speaks (pure). Trailing slashes are optional everywhere."""

from __future__ import annotations

from dataclasses import dataclass, field

from capture import posthog_format, segment_format
from capture.sdk_settings import SettingsRequest, settings_request

SEGMENT = "segment"
POSTHOG = "posthog"
SERVICE_PATHS = frozenset({"healthz", "readyz", "metrics"})


@dataclass(frozen=True, slots=True)
class CaptureRoute:
    fmt: str  # SEGMENT or POSTHOG
    kind: str  # the path's meaning inside its format ("batch", "track", "e"...)
    label: str = field(init=False, compare=False)  # "fmt:kind", the metrics' route label

    def __post_init__(self) -> None:
        object.__setattr__(self, "label", f"{self.fmt}:{self.kind}")


_ROUTES: dict[str, CaptureRoute] = {
    **{
        f"v1/{kind}": CaptureRoute(SEGMENT, kind)
        for kind in (*segment_format.BATCH_PATHS, *segment_format.SINGLE_PATHS)
    },
    **{path: CaptureRoute(POSTHOG, path) for path in posthog_format.BATCH_PATHS},
}


def route_for(path: str) -> CaptureRoute | str | SettingsRequest | None:
    """A capture route, a service path name ("healthz", "readyz", "metrics"), analytics-next's
    settings request, or None."""
    key = path.strip("/")
    if key in SERVICE_PATHS:
        return key
    route = _ROUTES.get(key)
    return route if route is not None else settings_request(key)
