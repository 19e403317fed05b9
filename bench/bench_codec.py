"""Time the wire codec against the usual alternatives, to show what a federated round pays for (de)serialising.

Usage: python bench/bench_codec.py [--repeats N]

pickle and torch.save/torch.load appear only as speed references, on bytes this script made itself;
the project never unpickles or torch.loads anything it receives.
"""

from __future__ import annotations

import argparse
import binascii
import importlib.util
import io
import json
import pickle
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from backends import codec

CNN_SHAPES = {
    "conv1.weight": (32, 1, 3, 3),
    "conv1.bias": (32,),
    "conv2.weight": (64, 32, 3, 3),
    "conv2.bias": (64,),
    "fc1.weight": (128, 9216),
    "fc1.bias": (128,),
    "fc2.weight": (10, 128),
    "fc2.bias": (10,),
}
BIG_LAYERS = 10
BIG_LAYER_SHAPE = (2500, 1000)

State = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Method:
    """One way to put a state on the wire and take it off again."""

    label: str
    encode: Callable[[State], Any]
    decode: Callable[[Any], State]
    small_only: bool = False


def random_state(shapes: dict[str, tuple[int, ...]]) -> State:
    """Random float32 values: incompressible and finite, like trained weights."""
    generator = torch.Generator().manual_seed(0)
    return {name: torch.randn(shape, generator=generator) for name, shape in shapes.items()}


def big_shapes() -> dict[str, tuple[int, ...]]:
    """Ten 10 MB layers, i.e. 100 MB of float32."""
    return {f"layer{i}.weight": BIG_LAYER_SHAPE for i in range(BIG_LAYERS)}


def torch_save(state: State) -> bytes:
    """Reference only: torch's own format."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def torch_load(blob: bytes) -> State:
    """Reference only, on bytes made by torch_save above."""
    return torch.load(io.BytesIO(blob), weights_only=True)


def json_encode(state: State) -> str:
    """Reference only: the naive way to put tensors into JSON."""
    return json.dumps({name: tensor.tolist() for name, tensor in state.items()})


def json_decode(text: str) -> State:
    """Reference only: the naive way back."""
    return {name: torch.tensor(values, dtype=torch.float32) for name, values in json.loads(text).items()}


METHODS = [
    Method("msgpack (encode/decode)", codec.encode, lambda blob: codec.decode(blob)[0]),
    Method("msgpack+base64 (encode_text)", codec.encode_text, lambda text: codec.decode_text(text)[0]),
    Method("pickle (reference)", lambda s: pickle.dumps(s, protocol=pickle.HIGHEST_PROTOCOL), pickle.loads),
    Method("torch.save/load (reference)", torch_save, torch_load),
    Method("JSON lists (reference)", json_encode, json_decode, small_only=True),
]


def median_ms(action: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Median wall time in ms after one untimed warm-up (first-touch page faults), and the last result."""
    result = action()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = action()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), result


def raw_bytes(state: State) -> int:
    """The size of the tensor data alone, the floor any format pays."""
    return sum(tensor.numel() * tensor.element_size() for tensor in state.values())


def wire_bytes(payload: Any) -> int:
    """Bytes on the wire; text payloads are ASCII, so one byte per character."""
    return len(payload.encode("utf-8")) if isinstance(payload, str) else len(payload)


def check_round_trip(state: State, decoded: State) -> None:
    """A benchmark of a lossy method would be meaningless."""
    if list(decoded) != list(state) or not all(torch.equal(decoded[k], state[k]) for k in state):
        raise SystemExit("a method did not round-trip the state exactly")


def bench_methods(state: State, small: bool, repeats: int) -> dict[str, tuple[float, float]]:
    """Print one row per method; return encode and decode medians by label."""
    raw = raw_bytes(state)
    print(f"{'method':<30} {'encode ms':>10} {'decode ms':>10} {'wire bytes':>13} {'x raw':>7}")
    medians = {}
    for method in METHODS:
        if method.small_only and not small:
            continue
        encode_ms, payload = median_ms(partial(method.encode, state), repeats)
        decode_ms, decoded = median_ms(partial(method.decode, payload), repeats)
        check_round_trip(state, decoded)
        size = wire_bytes(payload)
        print(f"{method.label:<30} {encode_ms:>10.2f} {decode_ms:>10.2f} {size:>13,} {size / raw:>7.3f}")
        medians[method.label] = (encode_ms, decode_ms)
    return medians


def base64_backends() -> dict[str, tuple[Callable[[bytes], str], Callable[[str], bytes]]]:
    """The stdlib and, when installed, pybase64, so both figures are on record."""
    backends = {
        "stdlib binascii": (
            lambda blob: binascii.b2a_base64(blob, newline=False).decode("ascii"),
            lambda text: binascii.a2b_base64(text, strict_mode=True),
        )
    }
    if importlib.util.find_spec("pybase64") is not None:
        import pybase64

        backends["pybase64"] = (
            pybase64.b64encode_as_string,
            lambda text: pybase64.b64decode(text, validate=True),
        )
    return backends


def bench_base64(state: State, repeats: int) -> None:
    """Time the base64 step alone with each available backend."""
    blob = codec.encode(state)
    for label, (to_text, from_text) in base64_backends().items():
        encode_ms, text = median_ms(partial(to_text, blob), repeats)
        decode_ms, back = median_ms(partial(from_text, text), repeats)
        if back != blob or text != codec.to_text(blob):
            raise SystemExit(f"{label} base64 disagrees with the codec")
        print(f"  base64 step alone, {label:<16} encode {encode_ms:8.2f} ms   decode {decode_ms:8.2f} ms")


def report_base64_share(medians: dict[str, tuple[float, float]]) -> None:
    """The share of the text path spent on base64, to say whether it dominates."""
    binary = medians["msgpack (encode/decode)"]
    text = medians["msgpack+base64 (encode_text)"]
    for index, step in enumerate(("encode", "decode")):
        share = max(text[index] - binary[index], 0.0) / text[index]
        verdict = "dominates" if share > 0.5 else "does not dominate"
        print(f"  base64 {verdict} {step}_text: {share:.0%} of {text[index]:.2f} ms")


def run(title: str, state: State, small: bool, repeats: int) -> None:
    """One state: the method table, then the base64 analysis."""
    count = sum(tensor.numel() for tensor in state.values())
    print(f"\n== {title}: {count:,} float32 parameters, {raw_bytes(state):,} raw bytes, median of {repeats} ==")
    medians = bench_methods(state, small, repeats)
    report_base64_share(medians)
    bench_base64(state, repeats)


def main() -> None:
    """Parse the options and bench both states."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per step (median reported)")
    args = parser.parse_args()
    base64_in_use = "pybase64" if importlib.util.find_spec("pybase64") is not None else "stdlib binascii"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, codec base64 backend: {base64_in_use}")
    run("CNN state", random_state(CNN_SHAPES), small=True, repeats=args.repeats)
    run("100 MB state", random_state(big_shapes()), small=False, repeats=args.repeats)


if __name__ == "__main__":
    main()
