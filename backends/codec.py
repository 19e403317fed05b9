"""The project's one wire format: named tensors plus plain metadata, as msgpack, with base64 text for JSON.

Received bytes are never unpickled: decode checks the whole message against strict limits
before it allocates a tensor, so a hostile or corrupt payload ends in CodecError, not deep in torch.
"""

from __future__ import annotations

import binascii
import math
import struct
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
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
MAX_META_BYTES = 1 << 20
META_BYTES_PER_CONTAINER = 16
MAX_META_CONTAINERS = MAX_META_BYTES // META_BYTES_PER_CONTAINER
MAX_FIELD_BYTES = 1 << 16

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
_INT64_MAX = (1 << 63) - 1
_MAX_MAP_KEYS = 16
_FIRST_STEP = 256
_INCOMPLETE = "invalid message: not a complete msgpack value without ext types"

# The Python type each msgpack first byte unpacks to, so a wrong type is named without building the value.
_KIND_RANGES = (
    (0x00, 0x7F, "int"), (0x80, 0x8F, "dict"), (0x90, 0x9F, "list"), (0xA0, 0xBF, "str"),
    (0xC0, 0xC0, "NoneType"), (0xC1, 0xC1, "invalid"), (0xC2, 0xC3, "bool"), (0xC4, 0xC6, "bytes"),
    (0xC7, 0xC9, "ext"), (0xCA, 0xCB, "float"), (0xCC, 0xD3, "int"), (0xD4, 0xD8, "ext"),
    (0xD9, 0xDB, "str"), (0xDC, 0xDD, "list"), (0xDE, 0xDF, "dict"), (0xE0, 0xFF, "int"),
)
_KINDS = tuple(kind for first, last, kind in _KIND_RANGES for _ in range(first, last + 1))
# Length fields of the bin, array and map headers that are not packed into the first byte.
_SIZED_HEADERS = {
    byte: struct.Struct(fmt)
    for byte, fmt in ((0xC4, ">B"), (0xC5, ">H"), (0xC6, ">I"), (0xDC, ">H"), (0xDD, ">I"), (0xDE, ">H"), (0xDF, ">I"))
}

if sys.byteorder != "little":
    raise ImportError("backends.codec writes raw tensor memory as little-endian and needs a little-endian host")


@dataclass(frozen=True)
class _Entry:
    """One tensor's header and payload, checked but not yet turned into a tensor."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    data: memoryview


def encode(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any] | None = None, *,
           max_meta_bytes: int = MAX_META_BYTES) -> bytes:
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
    parts.append(_pack_meta(packer, meta_map, max_meta_bytes))
    return b"".join(parts)


def decode(
    blob: bytes,
    expect: Mapping[str, torch.Tensor] | None = None,
    *,
    require_finite: bool = True,
    max_bytes: int = MAX_MESSAGE_BYTES,
    max_meta_bytes: int = MAX_META_BYTES,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Check the whole message before allocating any tensor, so bad input fails fast and cheaply.

    `max_meta_bytes` bounds the free-form meta (and, in proportion, its lists and maps): a round's
    messages carry none, a checkpoint carries its run's records and may allow more."""
    entries, meta = _read_message(_message_view(blob, max_bytes), max_bytes, max_meta_bytes)
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
    max_meta_bytes: int = MAX_META_BYTES,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """One call for receivers whose transport is JSON; an oversize text is refused before base64 decoding."""
    limit = 4 * -(-max_bytes // 3)
    if isinstance(text, str) and len(text) > limit:
        raise CodecError(f"invalid message text: {len(text)} characters is over the limit of {limit} for {max_bytes} bytes")
    return decode(from_text(text), expect, require_finite=require_finite, max_bytes=max_bytes,
                  max_meta_bytes=max_meta_bytes)


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
    problem = _plain_problem(meta_map, "meta")
    if problem is not None:
        raise CodecError(f"cannot encode meta: {problem}")
    return meta_map


def _pack_meta(packer: msgpack.Packer, meta: dict[str, Any], max_meta_bytes: int) -> bytes:
    """Turn msgpack's own range errors into the codec's error type, and refuse a meta that every
    receiver would refuse as too large, here where it is made."""
    try:
        packed = packer.pack(meta)
    except (ValueError, TypeError, OverflowError) as exc:
        raise CodecError(f"cannot encode meta: {exc}") from exc
    if len(packed) > max_meta_bytes:
        raise CodecError(f"cannot encode meta: {len(packed)} bytes is over the limit of {max_meta_bytes} bytes")
    return packed


def _plain_problem(value: Any, path: str) -> str | None:
    """Describe the first value that is not plain data, so both ends enforce the same rule."""
    found = _non_plain(value, 0)
    if found is None:
        return None
    steps, reason = found
    return f"{path}{''.join(reversed(steps))} {reason}"


def _non_plain(value: Any, depth: int) -> tuple[list[str], str] | None:
    """The path steps (innermost first) to the first non-plain value, and what is wrong with it.

    Only that value's path is spelled out: formatting one for every item made a large meta cost seconds.
    """
    if depth > MAX_META_DEPTH:
        return [], f"is nested deeper than {MAX_META_DEPTH} levels"
    if value is None or isinstance(value, (bool, float, str)):
        return None
    if isinstance(value, int):
        return None if value in _INT_RANGE else ([], "is an integer outside the 64-bit range")
    if isinstance(value, list):
        return _first_non_plain(enumerate(value), depth)
    if isinstance(value, dict):
        return _dict_non_plain(value, depth)
    return [], f"has type {type(value).__name__}, not a plain value"


def _dict_non_plain(value: dict[Any, Any], depth: int) -> tuple[list[str], str] | None:
    """Maps must have str keys because JSON and msgpack's strict mode only agree on those."""
    for key in value:
        if not isinstance(key, str):
            return [], f"has a key of type {type(key).__name__}, not str"
    return _first_non_plain(value.items(), depth)


def _first_non_plain(items: Iterable[tuple[Any, Any]], depth: int) -> tuple[list[str], str] | None:
    """Stop at the first problem rather than walk a large structure twice, and add its step to the path."""
    for key, item in items:
        found = _non_plain(item, depth + 1)
        if found is not None:
            found[0].append(f"[{key!r}]")
            return found
    return None


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


def _message_view(blob: bytes, max_bytes: int) -> memoryview:
    """A flat byte view of the message, so tensor data can be referenced in place rather than copied."""
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise CodecError(f"invalid message: expected bytes, got {type(blob).__name__}")
    view = memoryview(blob)
    if view.nbytes > max_bytes:
        raise CodecError(f"invalid message: {view.nbytes} bytes is over the limit of {max_bytes} bytes")
    try:
        return view.cast("B")
    except TypeError as exc:
        raise CodecError(f"invalid message: expected contiguous bytes ({exc})") from exc


@contextmanager
def _msgpack_errors() -> Iterator[None]:
    """msgpack reports bad input with several exception types; callers see CodecError alone."""
    try:
        yield
    except CodecError:
        raise
    except (ValueError, TypeError, OverflowError, msgpack.UnpackException) as exc:
        raise CodecError(f"{_INCOMPLETE} ({exc})") from exc


class _Reader:
    """A cursor over the message that builds only the values the format needs, each within a size limit.

    msgpack's C skipper finds where a value ends without building it, so a hostile structure costs a
    scan rather than a Python object per byte, and tensor data is referenced in place, never copied.
    """

    def __init__(self, view: memoryview) -> None:
        self.view = view
        self.pos = 0

    def kind(self) -> str:
        """The Python type of the next value, from its first byte alone."""
        if self.pos >= len(self.view):
            raise CodecError(f"{_INCOMPLETE} (it ends early)")
        kind = _KINDS[self.view[self.pos]]
        if kind == "invalid":
            raise CodecError(f"{_INCOMPLETE} (byte 0xc1 at offset {self.pos})")
        return kind

    def count(self) -> int:
        """Open the map, array or bin that kind() announced and give its entry count or byte length."""
        byte = self.view[self.pos]
        header = _SIZED_HEADERS.get(byte)
        if header is None:
            self.pos += 1
            return byte & 0x0F
        if self.pos + 1 + header.size > len(self.view):
            raise CodecError(f"{_INCOMPLETE} (it ends inside a header)")
        (count,) = header.unpack_from(self.view, self.pos + 1)
        self.pos += 1 + header.size
        return count

    def data(self) -> memoryview:
        """The bin at the cursor as a view into the message: no copy, however large the tensor."""
        end = self.count() + self.pos
        if end > len(self.view):
            raise CodecError(f"{_INCOMPLETE} (it ends inside a bin)")
        body, self.pos = self.view[self.pos:end], end
        return body

    def raw(self, limit: int, where: str) -> memoryview:
        """The encoded bytes of the next value, found without building it, refused past `limit` bytes."""
        length = _encoded_length(self.view[self.pos:self.pos + limit])
        if length is None:
            if self.pos + limit < len(self.view):
                raise CodecError(f"invalid message: {where} is over the limit of {limit} bytes")
            raise CodecError(f"{_INCOMPLETE} (it ends inside {where})")
        encoded, self.pos = self.view[self.pos:self.pos + length], self.pos + length
        return encoded

    def value(self, limit: int, where: str, containers: int = MAX_META_CONTAINERS) -> Any:
        """Build the next value, which the format caps at `limit` bytes and `containers` lists and maps."""
        return _unpack_plain(self.raw(limit, where), where, containers)

    def skip(self, where: str) -> None:
        """Step over a value the format has no place for; its key is reported, the value never built."""
        self.raw(len(self.view) - self.pos, where)


def _encoded_length(window: memoryview) -> int | None:
    """The length of the msgpack value that `window` starts with, or None if it runs past the window.

    msgpack's C skipper walks the value without building it; the window is fed in doubling steps, so
    finding the end of a small field next to a large tensor copies a few hundred bytes, not the tensor.
    """
    unpacker = msgpack.Unpacker(max_buffer_size=max(len(window), 1))
    fed, step = 0, _FIRST_STEP
    while fed < len(window):
        unpacker.feed(window[fed:fed + step])
        fed, step = min(fed + step, len(window)), 2 * step
        try:
            unpacker.skip()
        except msgpack.OutOfData:
            continue
        return unpacker.tell()
    return None


def _unpack_plain(encoded: memoryview, where: str, containers: int) -> Any:
    """Build one bounded value; msgpack caps every length at the input's, and ext types are refused."""
    budget = _Budget(where, containers)
    return msgpack.unpackb(encoded, raw=False, strict_map_key=True, max_ext_len=0,
                           list_hook=budget.list, object_pairs_hook=budget.map)


class _Budget:
    """Counts the lists and maps msgpack builds and stops it early: each can cost one byte on the wire
    but some 64 bytes of Python objects, so bytes alone would still let a value balloon."""

    def __init__(self, where: str, containers: int) -> None:
        self.where = where
        self.limit = containers
        self.left = containers

    def spend(self) -> None:
        """Charge one container."""
        self.left -= 1
        if self.left < 0:
            raise CodecError(f"invalid message: {self.where} has over the limit of {self.limit} lists and maps")

    def list(self, items: list[Any]) -> list[Any]:
        """msgpack's list_hook."""
        self.spend()
        return items

    def map(self, pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
        """msgpack's object_pairs_hook; msgpack would keep the last of duplicate keys, so that a second
        value could hide the one a reader checked: refuse them."""
        self.spend()
        mapping = dict(pairs)
        if len(mapping) != len(pairs):
            seen: set[Any] = set()
            duplicate = next(key for key, _ in pairs if key in seen or seen.add(key))
            raise CodecError(f"invalid message: {self.where} has a map with the duplicate key {duplicate!r}")
        return mapping


def _read_message(view: memoryview, max_bytes: int, max_meta_bytes: int) -> tuple[list[_Entry], dict[str, Any]]:
    """One pass in message order, checking each field as it is read; the encoder writes the version
    first, so a newer sender is told about the version before its layout is judged."""
    reader = _Reader(view)
    with _msgpack_errors():
        kind = reader.kind()
        if kind != "dict":
            raise CodecError(f"invalid message: top level is {kind}, expected a map")
        fields = _read_map(reader, "top level", partial(_top_value, max_bytes=max_bytes,
                                                         max_meta_bytes=max_meta_bytes))
    if reader.pos != len(view):
        raise CodecError(f"{_INCOMPLETE} ({len(view) - reader.pos} bytes follow it)")
    _check_keys(fields, _TOP_KEYS, "top level")
    return fields["tensors"], fields["meta"]


def _read_map(reader: _Reader, where: str, read_value: Callable[[_Reader, str, str], Any]) -> dict[str, Any]:
    """Read one of the format's maps: str keys, each once, and few, so no key list can balloon."""
    count = reader.count()
    if count > _MAX_MAP_KEYS:
        raise CodecError(f"invalid message: {where} has {count} keys, over the limit of {_MAX_MAP_KEYS}")
    fields: dict[str, Any] = {}
    for _ in range(count):
        key = reader.value(MAX_FIELD_BYTES, f"a key of {where}")
        if not isinstance(key, str):
            raise CodecError(f"invalid message: {where} has a key of type {type(key).__name__}, not str")
        if key in fields:
            raise CodecError(f"invalid message: {where} has the duplicate key {key!r}")
        fields[key] = read_value(reader, key, f"{where} value of {key!r}")
    return fields


def _top_value(reader: _Reader, key: str, where: str, max_bytes: int, max_meta_bytes: int) -> Any:
    """Read one top-level field; an unknown one is stepped over and reported with the key check."""
    if key == "version":
        version = reader.value(MAX_FIELD_BYTES, where)
        _check_version(version)
        return version
    if key == "tensors":
        return _read_entries(reader, max_bytes)
    if key == "meta":
        return _read_meta(reader, max_meta_bytes)
    reader.skip(where)
    return None


def _read_meta(reader: _Reader, max_meta_bytes: int) -> dict[str, Any]:
    """Meta is the one free-form part, so it is bounded in bytes before it is built and in lists and maps
    while it is built: one byte of msgpack can become some 64 bytes of Python objects."""
    kind = reader.kind()
    if kind != "dict":
        raise CodecError(f"invalid message: meta is {kind}, expected a map")
    meta = reader.value(max_meta_bytes, "meta", max_meta_bytes // META_BYTES_PER_CONTAINER)
    problem = _plain_problem(meta, "meta")
    if problem is not None:
        raise CodecError(f"invalid message: {problem}")
    return meta


def _read_entries(reader: _Reader, max_bytes: int) -> list[_Entry]:
    """Check every entry and the names' uniqueness before any tensor exists."""
    kind = reader.kind()
    if kind != "list":
        raise CodecError(f"invalid message: tensors is {kind}, expected a list")
    entries: list[_Entry] = []
    names: set[str] = set()
    for index in range(reader.count()):
        entry = _read_entry(reader, index, max_bytes)
        if entry.name in names:
            raise CodecError(f"invalid message: duplicate tensor name {entry.name!r}")
        names.add(entry.name)
        entries.append(entry)
    return entries


def _read_entry(reader: _Reader, index: int, max_bytes: int) -> _Entry:
    """Read one entry's map and check it whole."""
    where = f"tensors[{index}]"
    kind = reader.kind()
    if kind != "dict":
        raise CodecError(f"invalid message: {where} is {kind}, expected a map")
    fields = _read_map(reader, where, _entry_value)
    _check_keys(fields, _ENTRY_KEYS, where)
    return _check_entry(fields, index, max_bytes)


def _entry_value(reader: _Reader, key: str, where: str) -> Any:
    """Tensor data stays a view into the message; the small fields are built; unknown ones are skipped."""
    if key == "data" and reader.kind() == "bytes":
        return reader.data()
    if key in _ENTRY_KEYS:
        return reader.value(MAX_FIELD_BYTES, where)
    reader.skip(where)
    return None


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


def _check_entry(fields: dict[str, Any], index: int, max_bytes: int) -> _Entry:
    """Turn one entry's fields into a checked entry whose byte count matches its claimed shape."""
    name = fields["name"]
    if not isinstance(name, str) or not name:
        raise CodecError(f"invalid message: tensors[{index}] has name {name!r}, expected a non-empty str")
    dtype = _check_dtype(name, fields["dtype"])
    shape = _check_shape(name, fields["shape"], max_bytes)
    data = fields["data"]
    if not isinstance(data, memoryview):
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
    """Python ints cannot overflow, so the claimed size is exact however absurd the shape; a zero dim
    makes the size 0 but not torch's strides, which must still fit as if that dim were 1."""
    claimed = math.prod(shape) * dtype.itemsize
    if claimed > max_bytes:
        raise CodecError(f"invalid message: tensor {name!r} claims {claimed} bytes, over the limit of {max_bytes}")
    layout = math.prod(max(dim, 1) for dim in shape) * dtype.itemsize
    if layout > min(max_bytes, _INT64_MAX):
        raise CodecError(
            f"invalid message: tensor {name!r} shape {list(shape)} spans {layout} bytes with its zero dims as 1, "
            f"over the limit of {min(max_bytes, _INT64_MAX)}"
        )
    if claimed != length:
        raise CodecError(
            f"invalid message: tensor {name!r} shape {list(shape)} needs {claimed} bytes of data but has {length}"
        )


def check_expected(tensors: Mapping[str, torch.Tensor], expect: Mapping[str, torch.Tensor]) -> None:
    """decode's `expect` check, for tensors that travelled as part of a larger message."""
    _check_expect([_Entry(name, t.dtype, tuple(t.shape), memoryview(b"")) for name, t in tensors.items()], expect)


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
    if entry.data.nbytes:
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
