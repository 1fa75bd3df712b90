"""Encoding and decoding. Strict at the edge (client input), tolerant between components.

Strictness is a property of the type (`forbid_unknown_fields`): client-facing types forbid
unknown fields, bus events accept and drop them, so a newer producer does not break an older
consumer. Every decode error is turned into `DecodeError` with the field path and the reason.
"""

import re
from typing import Any, TypeVar

import msgspec

T = TypeVar("T")

_encoder = msgspec.json.Encoder()
_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}


class DecodeError(ValueError):
    """Input that does not match its schema. `field` is a JSON path such as `$.scaling.max_pods`."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}" if field else reason)
        self.field = field
        self.reason = reason


def encode(msg: Any) -> bytes:
    return _encoder.encode(msg)


def decode(data: bytes | str, type_: type[T]) -> T:
    """Decode JSON into `type_`, raising DecodeError naming the field and the reason."""
    decoder: msgspec.json.Decoder[T] | None = _decoders.get(type_)
    if decoder is None:
        decoder = _decoders[type_] = msgspec.json.Decoder(type_)
    try:
        return decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise _as_decode_error(str(exc)) from None
    except msgspec.DecodeError as exc:
        raise DecodeError("$", f"not valid JSON ({exc})") from None
    except RecursionError:
        raise DecodeError("$", "nested too deeply") from None


def convert(obj: Any, type_: type[T]) -> T:
    """Like decode, from already-parsed builtins (e.g. a TOML file)."""
    try:
        return msgspec.convert(obj, type_)
    except msgspec.ValidationError as exc:
        raise _as_decode_error(str(exc)) from None


def _as_decode_error(text: str) -> DecodeError:
    reason, sep, path = text.rpartition(" - at `")
    if not sep:
        reason, path = text, "$"
    path = path.rstrip("`")
    if path.startswith("key` in `"):
        path = path[len("key` in `"):]
    unknown = _UNKNOWN_FIELD.search(reason)
    if unknown:
        # Name the offending field itself, and say what to do about it.
        return DecodeError(f"{path}.{unknown.group(1)}", "unknown field: remove it or check its spelling")
    return DecodeError(path, reason)


_UNKNOWN_FIELD = re.compile(r"unknown field `([^`]+)`")
