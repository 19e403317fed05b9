"""The wire format must round-trip bit-exactly and refuse every bad payload with CodecError alone."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends import codec
from conftest import peak_traced_bytes
from backends.codec import DTYPES, decode, decode_text, encode, encode_text, from_text, to_text
from ppsdg.errors import CodecError

FLOAT_DTYPES = [name for name, dtype in DTYPES.items() if dtype.is_floating_point]
NAN_BITS = {
    "float16": (torch.int16, 0x7E01),
    "bfloat16": (torch.int16, 0x7FC1),
    "float32": (torch.int32, 0x7FC12345),
    "float64": (torch.int64, 0x7FF8000000000123),
}


def raw(tensor: torch.Tensor) -> bytes:
    """The tensor's bytes in C order, to compare bit patterns that torch.equal cannot (NaN)."""
    return tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def sample(name: str) -> torch.Tensor:
    """A tensor that spans its dtype's range, so a byte mix-up cannot go unnoticed."""
    dtype = DTYPES[name]
    generator = torch.Generator().manual_seed(7)
    if dtype == torch.bool:
        return torch.rand(5, 7, generator=generator) > 0.5
    if dtype.is_floating_point:
        values = torch.randn(5, 7, generator=generator, dtype=torch.float64) * 1000
        info = torch.finfo(dtype)
        values[0, :4] = torch.tensor([-0.0, info.tiny, info.max, info.min], dtype=torch.float64)
        return values.to(dtype)
    info = torch.iinfo(dtype)
    values = torch.randint(info.min, info.max, (5, 7), generator=generator, dtype=dtype)
    values[0, :2] = torch.tensor([info.min, info.max], dtype=dtype)
    return values


def nan_tensor(name: str) -> torch.Tensor:
    """A quiet NaN with a non-default payload, then both infinities."""
    int_type, payload = NAN_BITS[name]
    values = torch.tensor([payload, 0, 0], dtype=int_type).view(DTYPES[name]).clone()
    values[1:] = torch.tensor([float("inf"), float("-inf")])
    return values


def message(**changes: Any) -> dict[str, Any]:
    """A valid message as a plain structure, so tests can break one field at a time."""
    base: dict[str, Any] = {
        "version": 1,
        "tensors": [{"name": "w", "dtype": "float32", "shape": [2], "data": b"\x00" * 8}],
        "meta": {},
    }
    base.update(changes)
    return base


def entry(**changes: Any) -> bytes:
    """A packed message whose single tensor entry has the given fields replaced."""
    item: dict[str, Any] = {"name": "w", "dtype": "float32", "shape": [2], "data": b"\x00" * 8}
    item.update(changes)
    return msgpack.packb(message(tensors=[item]))


def packed_map(pairs: list[tuple[Any, Any]]) -> bytes:
    """A msgpack map written pair by pair, so it can hold a key twice, which no dict can."""
    assert len(pairs) < 16
    return bytes([0x80 | len(pairs)]) + b"".join(msgpack.packb(key) + msgpack.packb(value) for key, value in pairs)


def model_state() -> dict[str, torch.Tensor]:
    """A small stand-in for a state_dict, used as the `expect` template."""
    return {"fc.weight": torch.ones(3, 4), "fc.bias": torch.zeros(3)}


@pytest.mark.parametrize("name", list(DTYPES))
def test_every_dtype_round_trips_bit_exact(name: str) -> None:
    tensor = sample(name)
    out, meta = decode(encode({"t": tensor}))
    assert out["t"].dtype == DTYPES[name]
    assert torch.equal(out["t"], tensor)
    assert raw(out["t"]) == raw(tensor)
    assert meta == {}


@pytest.mark.parametrize("name", FLOAT_DTYPES)
def test_nan_payloads_round_trip_bit_exact_when_allowed(name: str) -> None:
    tensor = nan_tensor(name)
    out, _ = decode(encode({"t": tensor}), require_finite=False)
    assert raw(out["t"]) == raw(tensor)
    assert torch.isnan(out["t"][0]) and out["t"][1] == float("inf") and out["t"][2] == float("-inf")


@pytest.mark.parametrize(
    "tensor",
    [torch.tensor(3.5), torch.tensor(-9, dtype=torch.int64), torch.tensor(True), torch.empty(0), torch.empty(3, 0)],
    ids=["0d-float", "0d-int", "0d-bool", "empty-0", "empty-3x0"],
)
def test_scalars_and_empty_tensors_keep_their_shape(tensor: torch.Tensor) -> None:
    out, _ = decode(encode({"t": tensor}))
    assert out["t"].shape == tensor.shape
    assert out["t"].dtype == tensor.dtype
    assert torch.equal(out["t"], tensor)


def test_non_contiguous_input_is_sent_in_logical_order() -> None:
    tensor = torch.arange(12, dtype=torch.float32).reshape(3, 4).t()
    out, _ = decode(encode({"t": tensor}))
    assert out["t"].shape == (4, 3)
    assert out["t"].is_contiguous()
    assert out["t"][0].tolist() == [0.0, 4.0, 8.0]
    assert torch.equal(out["t"], tensor)


def test_large_tensor_round_trips() -> None:
    tensor = torch.randn(16 * 1024 * 1024, generator=torch.Generator().manual_seed(1))
    blob = encode({"big": tensor})
    assert len(blob) < tensor.numel() * 4 + 100
    out, _ = decode(blob)
    assert torch.equal(out["big"], tensor)


def test_order_and_meta_round_trip() -> None:
    tensors = {"z": torch.ones(2), "a": torch.zeros(1, dtype=torch.int8), "m": torch.tensor([True])}
    meta = {"round": 3, "loss": 0.125, "note": None, "clients": ["a", "b"], "nested": {"x": [1.5, {"y": False}]}}
    out, meta_out = decode(encode(tensors, meta))
    assert list(out) == ["z", "a", "m"]
    assert meta_out == meta


def test_text_survives_json() -> None:
    tensors = {"w": torch.randn(4, 5, dtype=torch.float64), "b": torch.arange(3, dtype=torch.int16)}
    wire = json.dumps({"payload": encode_text(tensors, {"round": 1})})
    out, meta = decode_text(json.loads(wire)["payload"])
    assert all(torch.equal(out[name], tensors[name]) for name in tensors)
    assert meta == {"round": 1}
    assert to_text(encode(tensors, {"round": 1})).isascii()


def test_decoded_tensor_is_writable_and_owns_its_memory() -> None:
    blob = encode({"w": torch.arange(4, dtype=torch.float32)})
    before = bytes(blob)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out, _ = decode(blob)
        out["w"].add_(10)
    assert out["w"].tolist() == [10.0, 11.0, 12.0, 13.0]
    assert blob == before
    assert decode(blob)[0]["w"].tolist() == [0.0, 1.0, 2.0, 3.0]


def test_float16_sum_overflow_is_not_mistaken_for_inf() -> None:
    tensor = torch.full((8,), 60000.0, dtype=torch.float16)
    out, _ = decode(encode({"t": tensor}))
    assert torch.equal(out["t"], tensor)


@pytest.mark.parametrize("cut", [0, 1, 5, 30, -9, -1])
def test_rejects_truncated_bytes(cut: int) -> None:
    blob = encode({"w": torch.ones(3)}, {"k": "v"})
    with pytest.raises(CodecError, match="invalid message: not a complete msgpack value"):
        decode(blob[:cut])


@pytest.mark.parametrize("blob", [b"\xc1", b"hello world", b"\x93\x01", bytes(range(256))])
def test_rejects_garbage(blob: bytes) -> None:
    with pytest.raises(CodecError, match="invalid message"):
        decode(blob)


def test_rejects_top_level_list() -> None:
    with pytest.raises(CodecError, match="top level is list, expected a map"):
        decode(msgpack.packb([1, "tensors", []]))


def test_rejects_missing_key() -> None:
    broken = message()
    del broken["meta"]
    with pytest.raises(CodecError, match=r"top level has missing keys \['meta'\]"):
        decode(msgpack.packb(broken))


def test_rejects_extra_key() -> None:
    with pytest.raises(CodecError, match=r"unexpected keys \['sneaky'\]"):
        decode(msgpack.packb(message(sneaky=1)))


@pytest.mark.parametrize("version", [0, 2])
def test_rejects_other_versions(version: int) -> None:
    with pytest.raises(CodecError, match=rf"unsupported format version {version} \(this build reads 1\)"):
        decode(msgpack.packb(message(version=version)))


@pytest.mark.parametrize("dtype", ["complex128", "object"])
def test_rejects_unknown_dtype(dtype: str) -> None:
    with pytest.raises(CodecError, match=f"tensor 'w' has unknown dtype '{dtype}'"):
        decode(entry(dtype=dtype))


def test_rejects_shape_length_mismatch() -> None:
    with pytest.raises(CodecError, match=r"shape \[3\] needs 12 bytes of data but has 8"):
        decode(entry(shape=[3]))


def test_rejects_negative_dim() -> None:
    with pytest.raises(CodecError, match="bad dim -1"):
        decode(entry(shape=[-1, -2]))


def test_rejects_absurd_dims_before_any_allocation() -> None:
    with pytest.raises(CodecError, match="bad dim 1099511627776"):
        decode(entry(shape=[2**40, 2**40]))


def test_rejects_oversize_claim_by_arithmetic() -> None:
    with pytest.raises(CodecError, match="claims 4398046511104 bytes, over the limit of 1073741824"):
        decode(entry(shape=[2**20, 2**20]))


def test_rejects_rank_over_limit() -> None:
    with pytest.raises(CodecError, match="not a list of at most 8 dims"):
        decode(entry(shape=[1] * 9, data=b"\x00" * 4))


def test_rejects_blob_over_max_bytes() -> None:
    blob = encode({"w": torch.ones(10)})
    assert decode(blob, max_bytes=len(blob))[0]["w"].sum() == 10
    with pytest.raises(CodecError, match=f"{len(blob)} bytes is over the limit of {len(blob) - 1} bytes"):
        decode(blob, max_bytes=len(blob) - 1)


@pytest.mark.parametrize("name", FLOAT_DTYPES)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_rejects_non_finite(name: str, bad: float) -> None:
    tensor = torch.ones(6, dtype=DTYPES[name])
    tensor[4] = bad
    blob = encode({"fc1.bias": torch.zeros(2), "fc1.weight": tensor})
    with pytest.raises(CodecError, match="tensor 'fc1.weight' holds NaN or Inf"):
        decode(blob)


@pytest.mark.parametrize(
    "value", [msgpack.ExtType(5, b"xy"), msgpack.Timestamp(1, 0)], ids=["ext", "timestamp"]
)
def test_rejects_ext_types(value: Any) -> None:
    with pytest.raises(CodecError, match="without ext types"):
        decode(msgpack.packb(message(meta={"when": value})))


def test_rejects_duplicate_tensor_name() -> None:
    item = {"name": "w", "dtype": "float32", "shape": [2], "data": b"\x00" * 8}
    with pytest.raises(CodecError, match="duplicate tensor name 'w'"):
        decode(msgpack.packb(message(tensors=[item, dict(item)])))


def test_meta_over_the_byte_limit_is_refused_before_it_is_built() -> None:
    blob = msgpack.packb(message(meta={"k": [[]] * (2 * codec.MAX_META_BYTES)}))
    with pytest.raises(CodecError, match=f"meta is over the limit of {codec.MAX_META_BYTES} bytes"):
        decode(blob)
    assert peak_traced_bytes(lambda: decode(blob)) < 2 * len(blob)


def test_meta_of_many_small_containers_is_refused_early() -> None:
    blob = msgpack.packb(message(meta={"k": [[]] * (codec.MAX_META_CONTAINERS + 1)}))
    assert len(blob) < codec.MAX_META_BYTES
    with pytest.raises(CodecError, match=f"meta has over the limit of {codec.MAX_META_CONTAINERS} lists and maps"):
        decode(blob)


def test_meta_just_under_the_limits_round_trips() -> None:
    meta = {"text": "x" * (codec.MAX_META_BYTES - 20_000), "pairs": [[1.5, 2]] * 1000}
    assert decode(encode({}, meta))[1] == meta


def test_encode_refuses_meta_that_receivers_would_refuse() -> None:
    with pytest.raises(CodecError, match=f"cannot encode meta: .* over the limit of {codec.MAX_META_BYTES} bytes"):
        encode({}, {"k": "x" * codec.MAX_META_BYTES})


def test_tensor_data_is_read_in_place_not_copied() -> None:
    tensor = torch.randn(1 << 20, generator=torch.Generator().manual_seed(2))
    blob = encode({"w": tensor}, {"round": 1})
    assert peak_traced_bytes(lambda: decode(blob)) < len(blob) // 8


@pytest.mark.parametrize("kind", [bytearray, memoryview])
def test_decodes_other_buffers_into_independent_tensors(kind: Callable[[bytes], Any]) -> None:
    buffer = bytearray(encode({"w": torch.arange(4, dtype=torch.float32)}))
    out, _ = decode(kind(buffer))
    buffer[-16:] = bytes(16)
    assert out["w"].tolist() == [0.0, 1.0, 2.0, 3.0]


@pytest.mark.parametrize(
    ("shape", "max_bytes"),
    [([0, 2**30, 2**30, 2**30], codec.MAX_MESSAGE_BYTES), ([2**40, 0, 2**40], 2**80), ([0, 2**62, 4], 2**80)],
)
def test_rejects_empty_tensor_whose_strides_would_overflow(shape: list[int], max_bytes: int) -> None:
    with pytest.raises(CodecError, match=r"tensor 'w' shape \[.*\] spans \d+ bytes with its zero dims as 1"):
        decode(entry(shape=shape, data=b""), max_bytes=max_bytes)


def test_empty_tensor_with_large_dims_within_the_limit_decodes() -> None:
    out, _ = decode(entry(shape=[0, 1024, 1024], data=b""))
    assert out["w"].shape == (0, 1024, 1024)


ENTRY_PAIRS = [("name", "w"), ("dtype", "float32"), ("shape", [2]), ("data", b"\x00" * 8)]


@pytest.mark.parametrize(
    ("blob", "pattern"),
    [
        (packed_map([("version", 1), ("tensors", []), ("meta", {}), ("meta", {"k": 1})]),
         "top level has the duplicate key 'meta'"),
        (packed_map([("version", 1), ("version", 1), ("tensors", []), ("meta", {})]),
         "top level has the duplicate key 'version'"),
        (b"\x83" + msgpack.packb("version") + b"\x01" + msgpack.packb("tensors")
         + b"\x91" + packed_map([*ENTRY_PAIRS, ("data", b"\xff" * 8)]) + msgpack.packb("meta") + b"\x80",
         r"tensors\[0\] has the duplicate key 'data'"),
        (b"\x83" + msgpack.packb("version") + b"\x01" + msgpack.packb("tensors") + b"\x90"
         + msgpack.packb("meta") + b"\x81" + msgpack.packb("a") + packed_map([("k", 1), ("k", 2)]),
         "meta has a map with the duplicate key 'k'"),
    ],
    ids=["top-meta", "top-version", "entry-data", "nested-meta"],
)
def test_rejects_duplicate_keys_at_every_level(blob: bytes, pattern: str) -> None:
    with pytest.raises(CodecError, match=pattern):
        decode(blob)


def test_rejects_maps_with_absurdly_many_keys() -> None:
    with pytest.raises(CodecError, match="top level has 17 keys, over the limit of 16"):
        decode(msgpack.packb(message(**{f"k{i}": None for i in range(14)})))


@pytest.mark.parametrize(
    ("fields", "pattern"),
    [
        ({"name": ""}, "expected a non-empty str"),
        ({"name": 5}, "expected a non-empty str"),
        ({"data": "text"}, "data is str, expected bin"),
        ({"shape": "2"}, "not a list of at most 8 dims"),
        ({"shape": [True, 2]}, "bad dim True"),
        ({"shape": [2.0]}, "bad dim 2.0"),
        ({"dtype": 7}, "unknown dtype 7"),
    ],
)
def test_rejects_bad_entry_fields(fields: dict[str, Any], pattern: str) -> None:
    with pytest.raises(CodecError, match=pattern):
        decode(entry(**fields))


@pytest.mark.parametrize(
    ("meta", "pattern"),
    [([1], "meta is list, expected a map"), ({"k": b"raw"}, r"meta\['k'\] has type bytes")],
)
def test_rejects_non_plain_meta_on_the_wire(meta: Any, pattern: str) -> None:
    with pytest.raises(CodecError, match=pattern):
        decode(msgpack.packb(message(meta=meta)))


def test_rejects_tensors_not_a_list() -> None:
    with pytest.raises(CodecError, match="tensors is dict, expected a list"):
        decode(msgpack.packb(message(tensors={})))


@pytest.mark.parametrize("text", ["not base64!", "QQ=", "QUJD=", "QQ==\n", " QQ==", "QQ==QQ==", "é123"])
def test_rejects_invalid_base64(text: str) -> None:
    with pytest.raises(CodecError, match="invalid message text: not strict base64"):
        from_text(text)


def test_rejects_oversize_text_before_decoding_it() -> None:
    text = encode_text({"w": torch.ones(10)})
    assert decode_text(text, max_bytes=len(from_text(text)))[0]["w"].sum() == 10
    with pytest.raises(CodecError, match=f"{len(text) + 4} characters is over the limit of {len(text)}"):
        decode_text(text + "AAAA", max_bytes=len(from_text(text)))


def test_rejects_non_str_text() -> None:
    with pytest.raises(CodecError, match="expected str, got bytes"):
        from_text(b"QQ==")


@pytest.mark.parametrize(
    ("meta", "pattern"),
    [
        ({"a": object()}, r"meta\['a'\] has type object"),
        ({"a": [torch.tensor(1)]}, r"meta\['a'\]\[0\] has type Tensor"),
        ({"a": b"raw"}, r"meta\['a'\] has type bytes"),
        ({"a": (1, 2)}, r"meta\['a'\] has type tuple"),
        ({1: "x"}, "meta has a key of type int"),
        ({"a": 2**64}, r"meta\['a'\] is an integer outside the 64-bit range"),
        ({"a": {"b": {1.5: 0}}}, r"meta\['a'\]\['b'\] has a key of type float"),
        ({"a": "\ud800"}, "'utf-8' codec can't encode character .*surrogates not allowed"),
    ],
)
def test_encode_rejects_non_plain_meta(meta: Any, pattern: str) -> None:
    with pytest.raises(CodecError, match=f"cannot encode meta: {pattern}"):
        encode({"w": torch.ones(1)}, meta)


def test_encode_rejects_too_deep_meta() -> None:
    deep: Any = 0
    for _ in range(40):
        deep = [deep]
    with pytest.raises(CodecError, match="nested deeper than 32 levels"):
        encode({}, {"deep": deep})


@pytest.mark.parametrize(
    ("tensors", "pattern"),
    [
        ({"c": torch.ones(2, dtype=torch.complex64)}, "dtype torch.complex64 is not one of"),
        ({"": torch.ones(1)}, "names must be non-empty str"),
        ({"n": [1.0]}, "expected a dense torch.Tensor, got list"),
        ({"s": torch.ones(2, 2).to_sparse()}, "expected a dense torch.Tensor"),
        ({"r": torch.ones([1] * 9)}, "rank 9 is over the limit of 8"),
    ],
)
def test_encode_rejects_unsendable_tensors(tensors: dict[str, Any], pattern: str) -> None:
    with pytest.raises(CodecError, match=f"cannot encode tensor .*{pattern}"):
        encode(tensors)


def test_expect_accepts_matching_state() -> None:
    state = model_state()
    out, _ = decode(encode({"fc.bias": torch.ones(3), "fc.weight": torch.ones(3, 4)}), expect=state)
    assert list(out) == ["fc.bias", "fc.weight"]


def test_expect_reports_missing_name() -> None:
    with pytest.raises(CodecError, match=r"missing tensors \['fc.bias'\], unexpected tensors \[\]"):
        decode(encode({"fc.weight": torch.ones(3, 4)}), expect=model_state())


def test_expect_reports_extra_name() -> None:
    blob = encode({**model_state(), "fc.extra": torch.ones(1)})
    with pytest.raises(CodecError, match=r"missing tensors \[\], unexpected tensors \['fc.extra'\]"):
        decode(blob, expect=model_state())


def test_expect_reports_wrong_shape() -> None:
    blob = encode({"fc.weight": torch.ones(4, 3), "fc.bias": torch.zeros(3)})
    with pytest.raises(CodecError, match=r"'fc.weight': expected float32 \[3, 4\], found float32 \[4, 3\]"):
        decode(blob, expect=model_state())


def test_expect_reports_wrong_dtype() -> None:
    blob = encode({"fc.weight": torch.ones(3, 4), "fc.bias": torch.zeros(3, dtype=torch.float64)})
    with pytest.raises(CodecError, match=r"'fc.bias': expected float32 \[3\], found float64 \[3\]"):
        decode(blob, expect=model_state())


def test_pybase64_and_stdlib_agree() -> None:
    pybase64 = pytest.importorskip("pybase64")
    blob = encode({"w": torch.randn(1000, generator=torch.Generator().manual_seed(3))}, {"k": "v"})
    text = pybase64.b64encode_as_string(blob)
    assert text == codec._stdlib_b64encode(blob)
    assert codec._stdlib_b64decode(text) == codec._pybase64_b64decode(text) == blob


def _valid_blob() -> bytes:
    """A message with every dtype, an empty and a 0-d tensor, and meta, for the fuzz tests to damage."""
    tensors = {name: sample(name)[:2, :3] for name in DTYPES}
    tensors.update({"empty": torch.empty(0, 2), "scalar": torch.tensor(1.5)})
    return encode(tensors, {"round": 2, "tags": ["a", None, 1.5], "cfg": {"lr": 0.1}})


VALID_BLOB = _valid_blob()


def decodes_or_codec_error(blob: bytes) -> None:
    """The property under fuzzing: any outcome but a foreign exception is acceptable."""
    try:
        decode(blob)
    except CodecError:
        pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512))
def test_fuzz_random_bytes_only_raise_codec_error(blob: bytes) -> None:
    decodes_or_codec_error(blob)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(VALID_BLOB) - 1), st.integers(0, 255))
def test_fuzz_single_byte_mutations_only_raise_codec_error(index: int, value: int) -> None:
    mutated = bytearray(VALID_BLOB)
    mutated[index] = value
    decodes_or_codec_error(bytes(mutated))


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(VALID_BLOB) - 1))
def test_fuzz_truncations_only_raise_codec_error(cut: int) -> None:
    with pytest.raises(CodecError):
        decode(VALID_BLOB[:cut])


def test_a_larger_meta_passes_only_where_the_receiver_allows_it():
    """Round messages keep the 1 MiB meta limit; a checkpoint, whose meta holds every round's record,
    allows more: 5,000 rounds of 10 workers."""
    from ppsdg import checkpoint, models, parser
    from ppsdg.job import Job

    config = parser.from_mapping({"num_rounds": 5000, "num_nodes": 11})
    job = Job.of_config(config)
    fixed = config.fixed_options()
    state = models.state_copy(models.new_model(job.synthesizer, config.run.seed))
    records = [{"round": r, "test_loss": 0.5, "test_accuracy": 0.9, "workers": [{"rank": w, "num_samples": 100, "train_loss": 0.1} for w in range(1, 11)],
                "failed": []} for r in range(1, 5001)]
    blob = checkpoint.encode(checkpoint.Checkpoint(5000, state, records), fixed)
    assert len(checkpoint.decode(blob, fixed, config.run, job, state).records) == 5000
    with pytest.raises(CodecError, match="meta is over the limit of 1048576 bytes"):
        decode(blob)
