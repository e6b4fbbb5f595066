"""Reading the settings' variable tables and readers in tests (help and .env.example)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


class RecordingEnv(dict[str, str]):
    """An empty environment that notes each variable a settings reader asks for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        self.asked.add(str(key))
        return super().__contains__(key)


def expand(name: str, default: str) -> Iterator[tuple[str, str]]:
    """(variable, default) of one table row. A row may join variables of one server with
    "/": `POSTGRES_HOST/PORT/DB` is POSTGRES_HOST, POSTGRES_PORT, POSTGRES_DB (the first
    name's last word replaced) and `PIPELINE_REPLAY_KEY/_PREVIOUS` is PIPELINE_REPLAY_KEY,
    PIPELINE_REPLAY_KEY_PREVIOUS; its defaults are joined the same way."""
    first, *rest = name.split("/")
    names = [first]
    prefix = first.rsplit("_", 1)[0] + "_"
    names += [first + part if part.startswith("_") else prefix + part for part in rest]
    defaults = default.split("/")
    if len(defaults) != len(names):
        defaults = [default] * len(names)
    yield from zip(names, defaults, strict=True)
