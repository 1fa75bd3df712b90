"""Replies as text. redis-py types every reply `bytes | str`, whatever the client decodes; ours
decodes (client.py), so they are `str`, and these say so to the type checker, failing loudly if a
client that does not decode ever reaches the store."""

from collections.abc import Iterable, Mapping

from redis.typing import EncodableT

Fields = dict[EncodableT, EncodableT]  # what HSET takes


def text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("the store needs a client with decode_responses=True (thaw_core.store.client)")
    return value


def optional_text(value: object) -> str | None:
    return None if value is None else text(value)


def texts(values: Iterable[object]) -> list[str]:
    return [text(v) for v in values]


def text_hash(h: Mapping[bytes | str, bytes | str]) -> dict[str, str]:
    return {text(k): text(v) for k, v in h.items()}
