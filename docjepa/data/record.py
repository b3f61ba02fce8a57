"""The on-disk record: one document per ArrayRecord entry, with no pickle anywhere.

Layout: b"DJR1" | u32 header length | JSON header | payload. The header maps each field
to either an inline JSON value or a slice of the payload that holds raw bytes, a list of
byte strings (page PNGs), or a numpy array (dtype and shape in the header).
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np

MAGIC = b"DJR1"
_ALLOWED_DTYPES = {"bool", "uint8", "int8", "int16", "int32", "int64", "uint32", "float16", "float32", "float64"}


class RecordError(ValueError):
    """A record that cannot be decoded (wrong magic, truncated, bad dtype)."""


def encode_record(fields: dict[str, Any]) -> bytes:
    """Encode a flat dict of arrays, bytes, lists of bytes, and JSON values."""
    header: dict[str, Any] = {}
    chunks: list[bytes] = []
    offset = 0

    def put(blob: bytes) -> list[int]:
        nonlocal offset
        chunks.append(blob)
        span = [offset, len(blob)]
        offset += len(blob)
        return span

    for name, value in fields.items():
        if isinstance(value, np.ndarray):
            if value.dtype.name not in _ALLOWED_DTYPES:
                raise TypeError(f"record field {name!r}: dtype {value.dtype} is not storable")
            arr = np.ascontiguousarray(value)
            header[name] = {"array": put(arr.tobytes()), "dtype": arr.dtype.name, "shape": list(arr.shape)}
        elif isinstance(value, (bytes, bytearray)):
            header[name] = {"bytes": put(bytes(value))}
        elif isinstance(value, list) and value and all(isinstance(v, (bytes, bytearray)) for v in value):
            header[name] = {"bytes_list": [put(bytes(v)) for v in value]}
        else:
            header[name] = {"json": value}
    head = json.dumps(header, separators=(",", ":")).encode()
    return MAGIC + struct.pack("<I", len(head)) + head + b"".join(chunks)


def decode_record(blob: bytes, fields: set[str] | None = None) -> dict[str, Any]:
    """Decode a record; `fields` limits which fields are materialised."""
    if blob[:4] != MAGIC or len(blob) < 8:
        raise RecordError("not a docjepa record (bad magic)")
    (hlen,) = struct.unpack("<I", blob[4:8])
    try:
        header = json.loads(blob[8 : 8 + hlen])
    except ValueError as e:
        raise RecordError(f"corrupt record header: {e}") from None
    base = 8 + hlen
    view = memoryview(blob)

    def get(span: list[int]) -> memoryview:
        start, length = span
        if base + start + length > len(blob):
            raise RecordError("truncated record payload")
        return view[base + start : base + start + length]

    out: dict[str, Any] = {}
    for name, spec in header.items():
        if fields is not None and name not in fields:
            continue
        if "json" in spec:
            out[name] = spec["json"]
        elif "bytes" in spec:
            out[name] = bytes(get(spec["bytes"]))
        elif "bytes_list" in spec:
            out[name] = [bytes(get(s)) for s in spec["bytes_list"]]
        else:
            if spec["dtype"] not in _ALLOWED_DTYPES:
                raise RecordError(f"record field {name!r}: bad dtype {spec['dtype']!r}")
            out[name] = np.frombuffer(get(spec["array"]), dtype=spec["dtype"]).reshape(spec["shape"])
    return out
