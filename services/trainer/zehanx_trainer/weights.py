"""Model weights written by a sandbox: safetensors only, checked before anything else reads them.

The platform never unpickles anything a sandbox wrote. safetensors is a JSON header plus raw bytes; the
header is parsed here by hand (size-capped, every tensor's dtype, shape and byte range checked against
the file) so a malformed or hostile file is refused with a clear message before the Rust loader or
anyone downloading the model touches it.

The header is untrusted input, so every cost is bounded before it is paid: the header's length (a
setting; real headers are about 100 bytes a tensor, tens of KiB for a 7B model), the digits of every
JSON integer (parsed through a hook, so a 4000-digit number is refused before ``int()`` sees it), the
dimensions of a shape and each one's size, and the element count, multiplied up one dimension at a
time. Whatever the parser itself raises on hostile input (depth, number syntax) becomes a
:class:`WeightsError` too. The check is CPU work over up to a few MiB: async callers run it in a thread.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

#: Bits per element of every dtype the safetensors format defines (F4 and F6 pack below a byte).
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "I64": 64,
    "U64": 64,
    "F64": 64,
    "C64": 64,
}
#: The default header cap. ~140 bytes a tensor entry: room for ~30,000 tensors, while a 7B model's
#: header is ~30 KiB. safetensors' own loader allows 100 MB; the trainer's setting may go up to that.
MAX_HEADER_BYTES = 4 * 1024 * 1024
MAX_TENSORS = 100_000
MAX_METADATA_ENTRIES = 1024
#: Dimensions of one tensor (numpy and torch allow 64).
MAX_DIMS = 64
#: Each dimension is below this (2^40 elements is already 1 TiB of bytes).
MAX_DIM = 2**40
#: Elements of one tensor; a body of the largest model the trainer stores holds far fewer.
MAX_ELEMENTS = 2**53
#: Digits of any integer in the header: offsets and dimensions fit in 16; 20 holds any u64.
MAX_INT_DIGITS = 20


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


def _bounded_int(text: str) -> int:
    """``json`` ``parse_int`` hook: refuse a long digit string before converting it (quadratic)."""
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise WeightsError(f"safetensors header holds an integer of {len(text)} digits")
    return int(text)


def inspect_safetensors(data: bytes, *, max_header_bytes: int = MAX_HEADER_BYTES) -> WeightsSummary:
    """Parse and check a safetensors file held in memory; raise :class:`WeightsError` if invalid.

    Nothing else escapes: whatever hostile input makes the JSON parser or the arithmetic raise
    (ValueError, OverflowError, RecursionError) is a :class:`WeightsError` too.
    """
    try:
        return _inspect(data, max_header_bytes)
    except WeightsError:
        raise
    except (ValueError, OverflowError, RecursionError) as exc:
        raise WeightsError(f"safetensors header cannot be read: {type(exc).__name__}: {exc!s:.200}") from None


def _elements(name: str, shape: object) -> int:
    """The element count of ``shape``, every bound checked before the next multiplication."""
    if not isinstance(shape, list) or len(shape) > MAX_DIMS:
        raise WeightsError(f"tensor {name!r:.80}: shape must be a list of at most {MAX_DIMS} dimensions")
    if not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < MAX_DIM for d in shape):
        raise WeightsError(f"tensor {name!r:.80}: shape must hold non-negative integers below 2^40")
    if 0 in shape:
        return 0
    elements = 1
    for d in shape:
        elements *= d  # both factors < 2^53 and < 2^40: no bigint work
        if elements > MAX_ELEMENTS:
            raise WeightsError(f"tensor {name!r:.80}: shape {shape!s:.80} holds more than 2^53 elements")
    return elements


def _inspect(data: bytes, max_header_bytes: int) -> WeightsSummary:
    if len(data) < 8:
        raise WeightsError("not a safetensors file: shorter than its 8-byte header length")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > max_header_bytes:
        raise WeightsError(
            f"safetensors header length {header_len} does not fit this trainer's cap of "
            f"{max_header_bytes} bytes"
        )
    if 8 + header_len > len(data):
        raise WeightsError(f"not a safetensors file: header length {header_len} does not fit the file")
    try:
        header = json.loads(data[8 : 8 + header_len].decode("utf-8"), parse_int=_bounded_int)
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
        if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
            raise WeightsError(f"tensor {name!r:.80}: unknown dtype {dtype!r:.20}")
        elements = _elements(name, shape)
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
        ):
            raise WeightsError(f"tensor {name!r:.80}: data_offsets must be two integers")
        begin, end = offsets
        bits = elements * DTYPE_BITS[dtype]
        if not 0 <= begin <= end <= body or bits % 8 or end - begin != bits // 8:
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
