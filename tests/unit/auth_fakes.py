"""Batch lookups for the unit tests' write-key index and directory fakes: each fake
answers one key at a time, and the Authenticator asks for many at once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class OneKeyAtATimeIndex:
    def client_for(self, key_hash: str) -> Any:
        raise NotImplementedError

    def clients_for(self, key_hashes: Sequence[str]) -> dict[str, Any]:
        return {h: self.client_for(h) for h in key_hashes}


class OneClientAtATimeDirectory:
    def lookup(self, client_id: str) -> Any:
        raise NotImplementedError

    def lookup_many(self, client_ids: Sequence[str]) -> dict[str, Any]:
        return {c: self.lookup(c) for c in client_ids}
