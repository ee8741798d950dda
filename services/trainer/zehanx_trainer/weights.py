"""Model weights written by a sandbox: safetensors only, checked before anything else reads them.

The platform never unpickles anything a sandbox wrote. safetensors is a JSON header plus raw bytes; the
header is parsed here by hand (size-capped, every tensor's dtype, shape and byte range checked against
the file) so a malformed or hostile file is refused with a clear message before the Rust loader or
anyone downloading the model touches it.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass

#: Bytes per element of every dtype the safetensors format defines.
DTYPE_SIZES: dict[str, float] = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "F8_E8M0": 1,
    "F4": 0.5,
    "F6_E2M3": 0.75,
    "F6_E3M2": 0.75,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
    "C64": 8,
}
MAX_HEADER_BYTES = 100 * 1024 * 1024
MAX_TENSORS = 100_000
MAX_METADATA_ENTRIES = 1024


class WeightsError(ValueError):
    """A weights file that is not valid safetensors."""


@dataclass(frozen=True, slots=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]
    size_bytes: int


@dataclass(frozen=True, slots=True)
class WeightsSummary:
    """What a valid safetensors file holds."""

    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]
    parameters: int
    size_bytes: int

    @property
    def dtypes(self) -> list[str]:
        return sorted({t.dtype for t in self.tensors.values()})


def inspect_safetensors(data: bytes) -> WeightsSummary:
    """Parse and check a safetensors file held in memory; raise :class:`WeightsError` if invalid."""
    if len(data) < 8:
        raise WeightsError("not a safetensors file: shorter than its 8-byte header length")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > MAX_HEADER_BYTES or 8 + header_len > len(data):
        raise WeightsError(f"not a safetensors file: header length {header_len} does not fit the file")
    try:
        header = json.loads(data[8 : 8 + header_len].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsError(f"safetensors header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise WeightsError("safetensors header must be a JSON object")
    metadata = header.pop("__metadata__", {}) or {}
    if not isinstance(metadata, dict) or len(metadata) > MAX_METADATA_ENTRIES:
        raise WeightsError("safetensors __metadata__ must be a small object of strings")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise WeightsError("safetensors __metadata__ values must be strings")
    if not header:
        raise WeightsError("safetensors file holds no tensors")
    if len(header) > MAX_TENSORS:
        raise WeightsError(f"safetensors file holds more than {MAX_TENSORS} tensors")

    body = len(data) - 8 - header_len
    tensors: dict[str, TensorInfo] = {}
    ranges: list[tuple[int, int, str]] = []
    parameters = 0
    for name, entry in header.items():
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise WeightsError(f"tensor {name!r:.80}: entry must have exactly dtype, shape, data_offsets")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in DTYPE_SIZES:
            raise WeightsError(f"tensor {name!r:.80}: unknown dtype {dtype!r:.20}")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise WeightsError(f"tensor {name!r:.80}: shape must be a list of non-negative integers")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
        ):
            raise WeightsError(f"tensor {name!r:.80}: data_offsets must be two integers")
        begin, end = offsets
        elements = math.prod(shape)
        expected = elements * DTYPE_SIZES[dtype]
        if not 0 <= begin <= end <= body or end - begin != expected:
            raise WeightsError(
                f"tensor {name!r:.80}: bytes [{begin}, {end}) do not match {dtype}{shape} in a "
                f"{body}-byte body"
            )
        tensors[name] = TensorInfo(dtype=dtype, shape=tuple(shape), size_bytes=end - begin)
        ranges.append((begin, end, name))
        parameters += elements
    # The byte ranges must tile the body exactly: no overlaps (aliasing), no hidden bytes.
    ranges.sort()
    cursor = 0
    for begin, end, name in ranges:
        if begin != cursor:
            raise WeightsError(f"tensor {name!r:.80}: byte ranges overlap or leave a gap at {cursor}")
        cursor = end
    if cursor != body:
        raise WeightsError(f"safetensors body has {body - cursor} bytes that belong to no tensor")
    return WeightsSummary(
        tensors=tensors, metadata=dict(metadata), parameters=parameters, size_bytes=len(data)
    )
