"""v2 tensors: datatypes, JSON data, the binary-data extension and BYTES serialisation."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from inferplane.oip.errors import BadRequest

NUMPY_OF: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
_DATATYPE_OF = {dtype: name for name, dtype in NUMPY_OF.items() if name != "BYTES"}


def datatype_of(array: np.ndarray) -> str:
    """The v2 datatype name of a numpy array (strings and objects are BYTES)."""
    if array.dtype.kind in "OSU":
        return "BYTES"
    try:
        return _DATATYPE_OF[array.dtype]
    except KeyError:
        raise BadRequest(f"unsupported tensor dtype {array.dtype}") from None


def _check_shape(name: str, shape: Any) -> list[int]:
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise BadRequest(f"input '{name}': shape must be a list of non-negative integers")
    return shape


def _flatten(data: Any) -> list:
    if not isinstance(data, list):
        return [data]
    if data and isinstance(data[0], list):
        flat: list = []
        for item in data:
            flat.extend(_flatten(item))
        return flat
    return data


def from_json(name: str, datatype: str, shape: Any, data: Any) -> np.ndarray:
    """A numpy array from a JSON tensor (nested or flat ``data``)."""
    shape = _check_shape(name, shape)
    if datatype not in NUMPY_OF:
        raise BadRequest(f"input '{name}': unknown datatype '{datatype}'")
    flat = _flatten(data)
    count = int(np.prod(shape)) if shape else 1
    if len(flat) != count:
        raise BadRequest(f"input '{name}': {len(flat)} values do not fill shape {shape}")
    try:
        if datatype == "BYTES":
            array = np.empty(count, dtype=object)
            array[:] = [v.encode() if isinstance(v, str) else bytes(v) for v in flat]
        else:
            array = np.asarray(flat, dtype=NUMPY_OF[datatype])
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"input '{name}': data do not match datatype {datatype}: {exc}") from None
    return array.reshape(shape)


def to_json_data(array: np.ndarray) -> list:
    """A flat JSON list of ``array``'s values (BYTES as text where it decodes)."""
    if array.dtype.kind in "OSU":
        out = []
        for v in array.reshape(-1):
            if isinstance(v, bytes):
                try:
                    v = v.decode()
                except UnicodeDecodeError:
                    v = v.decode("latin-1")
            out.append(v if isinstance(v, str) else str(v))
        return out
    return array.reshape(-1).tolist()


def from_raw(name: str, datatype: str, shape: Any, raw: bytes | memoryview) -> np.ndarray:
    """A numpy array from raw little-endian bytes (the binary extension and gRPC raw contents)."""
    shape = _check_shape(name, shape)
    if datatype not in NUMPY_OF:
        raise BadRequest(f"input '{name}': unknown datatype '{datatype}'")
    count = int(np.prod(shape)) if shape else 1
    if datatype == "BYTES":
        return deserialize_bytes(name, raw, count).reshape(shape)
    dtype = NUMPY_OF[datatype].newbyteorder("<")
    if len(raw) != count * dtype.itemsize:
        raise BadRequest(f"input '{name}': {len(raw)} bytes do not fill shape {shape} of {datatype}")
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def to_raw(array: np.ndarray) -> bytes:
    """Raw little-endian bytes of ``array`` (BYTES: 4-byte length + bytes per element)."""
    if array.dtype.kind in "OSU":
        return serialize_bytes(array)
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def serialize_bytes(array: np.ndarray) -> bytes:
    parts = []
    for v in array.reshape(-1):
        b = v if isinstance(v, bytes) else str(v).encode()
        parts.append(struct.pack("<I", len(b)))
        parts.append(b)
    return b"".join(parts)


def deserialize_bytes(name: str, raw: bytes | memoryview, count: int) -> np.ndarray:
    raw = bytes(raw)
    out = np.empty(count, dtype=object)
    offset = 0
    for i in range(count):
        if offset + 4 > len(raw):
            raise BadRequest(f"input '{name}': BYTES data end early")
        (size,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        out[i] = raw[offset : offset + size]
        offset += size
    if offset != len(raw):
        raise BadRequest(f"input '{name}': BYTES data longer than the shape")
    return out
