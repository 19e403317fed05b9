"""The project's one wire format: named tensors plus plain metadata, as msgpack, with base64 text for JSON.

Received bytes are never unpickled: decode checks the whole message against strict limits
before it allocates a tensor, so a hostile or corrupt payload ends in CodecError, not deep in torch.
"""

from __future__ import annotations

import binascii
import math
import struct
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np
import torch

try:
    import pybase64
except ImportError:
    pybase64 = None

from ppsdg.errors import CodecError

FORMAT_VERSION = 1
MAX_MESSAGE_BYTES = 1 << 30
MAX_RANK = 8
MAX_META_DEPTH = 32

DTYPES: dict[str, torch.dtype] = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
    "uint8": torch.uint8,
    "int8": torch.int8,
    "int16": torch.int16,
    "int32": torch.int32,
    "int64": torch.int64,
    "bool": torch.bool,
}
_DTYPE_NAMES: dict[torch.dtype, str] = {dtype: name for name, dtype in DTYPES.items()}

_TOP_KEYS = frozenset({"version", "tensors", "meta"})
_ENTRY_KEYS = frozenset({"name", "dtype", "shape", "data"})
_MAX_BIN_LEN = (1 << 32) - 1
_INT_RANGE = range(-(1 << 63), 1 << 64)

if sys.byteorder != "little":
    raise ImportError("backends.codec writes raw tensor memory as little-endian and needs a little-endian host")


@dataclass(frozen=True)
class _Entry:
    """One tensor's header and payload, checked but not yet turned into a tensor."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    data: bytes


def encode(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any] | None = None) -> bytes:
    """Frame the tensors by hand so the whole message costs one copy of the tensor data (the final join)."""
    meta_map = _encodable_meta(meta)
    packer = msgpack.Packer(autoreset=True)
    parts: list[bytes | memoryview] = [
        packer.pack_map_header(3),
        packer.pack("version"),
        packer.pack(FORMAT_VERSION),
        packer.pack("tensors"),
        packer.pack_array_header(len(tensors)),
    ]
    for name, tensor in tensors.items():
        parts.extend(_encode_entry(packer, name, tensor))
    parts.append(packer.pack("meta"))
    parts.append(_pack_meta(packer, meta_map))
    return b"".join(parts)


def decode(
    blob: bytes,
    expect: Mapping[str, torch.Tensor] | None = None,
    *,
    require_finite: bool = True,
    max_bytes: int = MAX_MESSAGE_BYTES,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Check the whole message before allocating any tensor, so bad input fails fast and cheaply."""
    message = _unpack(blob, max_bytes)
    entries, meta = _check_message(message, max_bytes)
    if expect is not None:
        _check_expect(entries, expect)
    tensors = {entry.name: _build(entry) for entry in entries}
    if require_finite:
        _check_finite(tensors)
    return tensors, meta


def to_text(blob: bytes) -> str:
    """Base64, because vantage6 carries results inside JSON, which has no bytes type."""
    return _b64encode(blob)


def from_text(text: str) -> bytes:
    """Strict, so that a payload mangled in transit is refused rather than silently repaired."""
    if not isinstance(text, str):
        raise CodecError(f"invalid message text: expected str, got {type(text).__name__}")
    if len(text) % 4:
        raise CodecError(f"invalid message text: not strict base64 (length {len(text)} is not a multiple of 4)")
    try:
        return _b64decode(text)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise CodecError(f"invalid message text: not strict base64 ({exc})") from exc


def encode_text(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any] | None = None) -> str:
    """One call for senders whose transport is JSON."""
    return to_text(encode(tensors, meta))


def decode_text(
    text: str,
    expect: Mapping[str, torch.Tensor] | None = None,
    *,
    require_finite: bool = True,
    max_bytes: int = MAX_MESSAGE_BYTES,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """One call for receivers whose transport is JSON; an oversize text is refused before base64 decoding."""
    limit = 4 * -(-max_bytes // 3)
    if isinstance(text, str) and len(text) > limit:
        raise CodecError(f"invalid message text: {len(text)} characters is over the limit of {limit} for {max_bytes} bytes")
    return decode(from_text(text), expect, require_finite=require_finite, max_bytes=max_bytes)


def _stdlib_b64encode(blob: bytes) -> str:
    """The fallback when pybase64 is absent: same output, but 20 to 60 times slower (bench/bench_codec.py)."""
    return binascii.b2a_base64(blob, newline=False).decode("ascii")


def _stdlib_b64decode(text: str) -> bytes:
    """The fallback when pybase64 is absent; with the length check in from_text it accepts the same texts."""
    return binascii.a2b_base64(text, strict_mode=True)


def _pybase64_b64decode(text: str) -> bytes:
    """pybase64's SIMD decoder in its strict mode."""
    return pybase64.b64decode(text, validate=True)


_b64encode = _stdlib_b64encode if pybase64 is None else pybase64.b64encode_as_string
_b64decode = _stdlib_b64decode if pybase64 is None else _pybase64_b64decode


def _encodable_meta(meta: Mapping[str, Any] | None) -> dict[str, Any]:
    """Refuse non-plain meta at the sender, where the mistake is made, not at the receiver."""
    meta_map = {} if meta is None else meta
    if not isinstance(meta_map, Mapping):
        raise CodecError(f"cannot encode meta: expected a mapping, got {type(meta_map).__name__}")
    meta_map = dict(meta_map)
    problem = _plain_problem(meta_map, "meta", 0)
    if problem is not None:
        raise CodecError(f"cannot encode meta: {problem}")
    return meta_map


def _pack_meta(packer: msgpack.Packer, meta: dict[str, Any]) -> bytes:
    """Turn msgpack's own range errors into the codec's error type."""
    try:
        return packer.pack(meta)
    except (ValueError, TypeError, OverflowError) as exc:
        raise CodecError(f"cannot encode meta: {exc}") from exc


def _plain_problem(value: Any, path: str, depth: int) -> str | None:
    """Describe the first value that is not plain data, so both ends enforce the same rule."""
    if depth > MAX_META_DEPTH:
        return f"{path} is nested deeper than {MAX_META_DEPTH} levels"
    if value is None or isinstance(value, (bool, float, str)):
        return None
    if isinstance(value, int):
        return None if value in _INT_RANGE else f"{path} is an integer outside the 64-bit range"
    if isinstance(value, list):
        return _first_problem(_plain_problem(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value))
    if isinstance(value, dict):
        return _dict_problem(value, path, depth)
    return f"{path} has type {type(value).__name__}, not a plain value"


def _dict_problem(value: dict[Any, Any], path: str, depth: int) -> str | None:
    """Maps must have str keys because JSON and msgpack's strict mode only agree on those."""
    for key, item in value.items():
        if not isinstance(key, str):
            return f"{path} has a key of type {type(key).__name__}, not str"
        problem = _plain_problem(item, f"{path}[{key!r}]", depth + 1)
        if problem is not None:
            return problem
    return None


def _first_problem(problems: Iterable[str | None]) -> str | None:
    """Stop at the first problem rather than walk a large structure twice."""
    return next((problem for problem in problems if problem is not None), None)


def _encode_entry(packer: msgpack.Packer, name: str, tensor: torch.Tensor) -> list[bytes | memoryview]:
    """Give the header pieces and a zero-copy view of the tensor's bytes."""
    if not isinstance(name, str) or not name:
        raise CodecError(f"cannot encode tensor {name!r}: names must be non-empty str")
    data = _tensor_bytes(name, tensor)
    return [
        packer.pack_map_header(4),
        packer.pack("name"),
        packer.pack(name),
        packer.pack("dtype"),
        packer.pack(_DTYPE_NAMES[tensor.dtype]),
        packer.pack("shape"),
        packer.pack(list(tensor.shape)),
        packer.pack("data"),
        _bin_header(len(data)),
        data,
    ]


def _tensor_bytes(name: str, tensor: torch.Tensor) -> memoryview:
    """View the contiguous CPU tensor as raw bytes; a copy happens only if it was not contiguous on CPU."""
    if not isinstance(tensor, torch.Tensor) or tensor.layout != torch.strided:
        raise CodecError(f"cannot encode tensor {name!r}: expected a dense torch.Tensor, got {type(tensor).__name__}")
    if tensor.dtype not in _DTYPE_NAMES:
        raise CodecError(f"cannot encode tensor {name!r}: dtype {tensor.dtype} is not one of {sorted(DTYPES)}")
    if tensor.dim() > MAX_RANK:
        raise CodecError(f"cannot encode tensor {name!r}: rank {tensor.dim()} is over the limit of {MAX_RANK}")
    dense = tensor.detach().cpu().contiguous()
    data = memoryview(dense.reshape(-1).view(torch.uint8).numpy())
    if len(data) > _MAX_BIN_LEN:
        raise CodecError(f"cannot encode tensor {name!r}: {len(data)} bytes is over msgpack's 4 GiB limit")
    return data


def _bin_header(length: int) -> bytes:
    """msgpack's bin header, written by hand because Packer offers no way to pack one alone."""
    if length < 1 << 8:
        return struct.pack(">BB", 0xC4, length)
    if length < 1 << 16:
        return struct.pack(">BH", 0xC5, length)
    return struct.pack(">BI", 0xC6, length)


def _unpack(blob: bytes, max_bytes: int) -> Any:
    """Unpack with every length bounded by the blob itself and no ext types, so nothing can balloon."""
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise CodecError(f"invalid message: expected bytes, got {type(blob).__name__}")
    size = memoryview(blob).nbytes
    if size > max_bytes:
        raise CodecError(f"invalid message: {size} bytes is over the limit of {max_bytes} bytes")
    try:
        return msgpack.unpackb(
            blob,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_bin_len=size,
            max_str_len=size,
            max_array_len=size,
            max_map_len=size,
            max_ext_len=0,
        )
    except (ValueError, TypeError, OverflowError, msgpack.UnpackException) as exc:
        raise CodecError(f"invalid message: not a complete msgpack value without ext types ({exc})") from exc


def _check_message(message: Any, max_bytes: int) -> tuple[list[_Entry], dict[str, Any]]:
    """Version first, so a newer sender gets a clear answer even if its layout changed."""
    if not isinstance(message, dict):
        raise CodecError(f"invalid message: top level is {type(message).__name__}, expected a map")
    _check_version(message.get("version"))
    _check_keys(message, _TOP_KEYS, "top level")
    entries = _check_entries(message["tensors"], max_bytes)
    meta = message["meta"]
    if not isinstance(meta, dict):
        raise CodecError(f"invalid message: meta is {type(meta).__name__}, expected a map")
    problem = _plain_problem(meta, "meta", 0)
    if problem is not None:
        raise CodecError(f"invalid message: {problem}")
    return entries, meta


def _check_version(version: Any) -> None:
    """Only one version exists; guessing at another would misread its bytes."""
    if type(version) is not int or version != FORMAT_VERSION:
        raise CodecError(f"invalid message: unsupported format version {version!r} (this build reads {FORMAT_VERSION})")


def _check_keys(mapping: dict[Any, Any], wanted: frozenset[str], where: str) -> None:
    """Exact key sets, so a typo or a smuggled field is an error, not ignored."""
    keys = set(mapping)
    if keys != wanted:
        missing = sorted(wanted - keys)
        extra = sorted(keys - wanted, key=repr)
        raise CodecError(f"invalid message: {where} has missing keys {missing} and unexpected keys {extra}")


def _check_entries(raw: Any, max_bytes: int) -> list[_Entry]:
    """Check every entry and the names' uniqueness before any tensor exists."""
    if not isinstance(raw, list):
        raise CodecError(f"invalid message: tensors is {type(raw).__name__}, expected a list")
    entries = [_check_entry(item, index, max_bytes) for index, item in enumerate(raw)]
    seen: set[str] = set()
    for entry in entries:
        if entry.name in seen:
            raise CodecError(f"invalid message: duplicate tensor name {entry.name!r}")
        seen.add(entry.name)
    return entries


def _check_entry(item: Any, index: int, max_bytes: int) -> _Entry:
    """Turn one raw map into a checked entry whose byte count matches its claimed shape."""
    if not isinstance(item, dict):
        raise CodecError(f"invalid message: tensors[{index}] is {type(item).__name__}, expected a map")
    _check_keys(item, _ENTRY_KEYS, f"tensors[{index}]")
    name = item["name"]
    if not isinstance(name, str) or not name:
        raise CodecError(f"invalid message: tensors[{index}] has name {name!r}, expected a non-empty str")
    dtype = _check_dtype(name, item["dtype"])
    shape = _check_shape(name, item["shape"], max_bytes)
    data = item["data"]
    if not isinstance(data, bytes):
        raise CodecError(f"invalid message: tensor {name!r} data is {type(data).__name__}, expected bin")
    _check_size(name, dtype, shape, len(data), max_bytes)
    return _Entry(name, dtype, shape, data)


def _check_dtype(name: str, raw: Any) -> torch.dtype:
    """Allow-list, so no sender can ask for object or complex memory layouts."""
    if not isinstance(raw, str) or raw not in DTYPES:
        raise CodecError(f"invalid message: tensor {name!r} has unknown dtype {raw!r}")
    return DTYPES[raw]


def _check_shape(name: str, raw: Any, max_bytes: int) -> tuple[int, ...]:
    """Bound rank and every dim, so even an empty tensor cannot carry an absurd shape into torch."""
    if not isinstance(raw, list) or len(raw) > MAX_RANK:
        raise CodecError(f"invalid message: tensor {name!r} shape {raw!r} is not a list of at most {MAX_RANK} dims")
    for dim in raw:
        if type(dim) is not int or not 0 <= dim <= max_bytes:
            raise CodecError(f"invalid message: tensor {name!r} shape {raw!r} has a bad dim {dim!r}")
    return tuple(raw)


def _check_size(name: str, dtype: torch.dtype, shape: tuple[int, ...], length: int, max_bytes: int) -> None:
    """Python ints cannot overflow, so the claimed size is exact however absurd the shape."""
    claimed = math.prod(shape) * dtype.itemsize
    if claimed > max_bytes:
        raise CodecError(f"invalid message: tensor {name!r} claims {claimed} bytes, over the limit of {max_bytes}")
    if claimed != length:
        raise CodecError(
            f"invalid message: tensor {name!r} shape {list(shape)} needs {claimed} bytes of data but has {length}"
        )


def check_expected(tensors: Mapping[str, torch.Tensor], expect: Mapping[str, torch.Tensor]) -> None:
    """decode's `expect` check, for tensors that travelled as part of a larger message."""
    _check_expect([_Entry(name, t.dtype, tuple(t.shape), b"") for name, t in tensors.items()], expect)


def _check_expect(entries: list[_Entry], expect: Mapping[str, torch.Tensor]) -> None:
    """Compare with the receiver's model before allocating, and report every mismatch at once."""
    names = [entry.name for entry in entries]
    found = set(names)
    missing = [name for name in expect if name not in found]
    unexpected = [name for name in names if name not in expect]
    if missing or unexpected:
        raise CodecError(
            f"message does not match the model: missing tensors {missing}, unexpected tensors {unexpected}"
        )
    wrong = [_mismatch(entry, expect[entry.name]) for entry in entries]
    problems = [problem for problem in wrong if problem is not None]
    if problems:
        raise CodecError("message does not match the model: " + "; ".join(problems))


def _mismatch(entry: _Entry, template: torch.Tensor) -> str | None:
    """Describe one tensor's shape or dtype difference from the template, if any."""
    expected = (tuple(template.shape), template.dtype)
    if expected == (entry.shape, entry.dtype):
        return None
    return (
        f"tensor {entry.name!r}: expected {_dtype_name(template.dtype)} {list(template.shape)}, "
        f"found {_dtype_name(entry.dtype)} {list(entry.shape)}"
    )


def _dtype_name(dtype: torch.dtype) -> str:
    """Wire names in messages, so errors read the same as the payload."""
    return _DTYPE_NAMES.get(dtype, str(dtype))


def _build(entry: _Entry) -> torch.Tensor:
    """Copy into torch-owned memory so the tensor is writable and independent of the message."""
    tensor = torch.empty(entry.shape, dtype=entry.dtype)
    if entry.data:
        tensor.view(-1).view(torch.uint8).numpy()[:] = np.frombuffer(entry.data, dtype=np.uint8)
    return tensor


def _check_finite(tensors: dict[str, torch.Tensor]) -> None:
    """A NaN from one client would poison the aggregate, so refuse it at the door."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not _all_finite(tensor):
            raise CodecError(f"invalid message: tensor {name!r} holds NaN or Inf")


def _all_finite(tensor: torch.Tensor) -> bool:
    """A NaN or Inf anywhere makes the sum non-finite, so a finite sum proves the tensor clean at a
    fraction of the cost of isfinite; only a non-finite sum (maybe mere overflow) needs the exact check."""
    return bool(torch.isfinite(tensor.sum())) or bool(torch.isfinite(tensor).all())
