"""Time the wire codec against the usual alternatives, to show what a federated round pays for (de)serialising.

    python bench/bench_codec.py [--repeats 15] [--threads 1] [--accuracy-rounds 10] [--accuracy-seeds 3]

Two states: the `Net` classifier (4.8 MB of float32) and a 100 MB state. For each format: median
encode and decode time, the bytes on the wire and the page faults per call (fresh memory is what
costs most in this VM). Then the base64 step alone (stdlib against pybase64), the optional
half-precision transport (bytes, time, rounding error) and what half precision costs in accuracy:
the main job's training (bench/inprocess.py) with every message rounded through float16, against
float32, over a few seeds.
Writes bench/results/codec.md and codec.json.

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
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

import inprocess
import runs
from backends import codec
from ppsdg import parser
from ppsdg.simplemodel import Net

BIG_LAYERS = 10
BIG_LAYER_SHAPE = (2500, 1000)
TARGET_MS = 10.0
SLOW_REPEATS = 3
TARGET_RATIO = 1.34
PATH_LABEL = "msgpack+base64 (the wire)"
BINARY_LABEL = "msgpack alone"
HALF_LABEL = "msgpack+base64, float16"

State = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Method:
    """One way to put a state on the wire and take it off again; lossy ones are checked by error, not equality."""

    label: str
    encode: Callable[[State], Any]
    decode: Callable[[Any], State]
    small_only: bool = False
    lossy: bool = False
    slow: bool = False


@dataclass(frozen=True)
class Row:
    """One measured method on one state."""

    label: str
    encode_ms: float
    decode_ms: float
    wire_bytes: int
    ratio: float
    faults_per_call: int
    max_rel_error: float


def net_state() -> State:
    """The classifier's initial parameters: the state every round of the main job sends."""
    torch.manual_seed(0)
    return {name: tensor.detach().clone() for name, tensor in Net().state_dict().items()}


def big_state() -> State:
    """Ten 10 MB layers, i.e. 100 MB of float32, random and so incompressible."""
    generator = torch.Generator().manual_seed(0)
    return {f"layer{i}.weight": torch.randn(BIG_LAYER_SHAPE, generator=generator) for i in range(BIG_LAYERS)}


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


def half_encode(state: State) -> str:
    """The half-precision transport: cast float32 to float16, then the ordinary wire path."""
    return codec.encode_text({k: v.half() if v.dtype == torch.float32 else v for k, v in state.items()})


def half_decode(text: str) -> State:
    """Back to float32 for the receiver's model."""
    tensors, _ = codec.decode_text(text)
    return {k: v.float() if v.dtype == torch.float16 else v for k, v in tensors.items()}


def safetensors_methods() -> list[Method]:
    """safetensors (Hugging Face) when installed: a safe binary format, the nearest alternative to ours."""
    if importlib.util.find_spec("safetensors") is None:
        return []
    from safetensors.torch import load, save

    return [Method("safetensors (reference)", save, load)]


def methods() -> list[Method]:
    return [
        Method(BINARY_LABEL, codec.encode, lambda blob: codec.decode(blob)[0]),
        Method(PATH_LABEL, codec.encode_text, lambda text: codec.decode_text(text)[0]),
        Method(HALF_LABEL, half_encode, half_decode, lossy=True),
        *safetensors_methods(),
        Method("pickle (reference)", lambda s: pickle.dumps(s, protocol=pickle.HIGHEST_PROTOCOL), pickle.loads),
        Method("torch.save/load (reference)", torch_save, torch_load),
        Method("JSON lists (reference)", json_encode, json_decode, small_only=True, slow=True),
    ]


def minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def median_ms(action: Callable[[], Any], repeats: int) -> tuple[float, int, Any]:
    """Median wall time in ms and page faults per call after one untimed warm-up, and the last result."""
    result = action()
    times = []
    faults = minor_faults()
    for _ in range(repeats):
        start = time.perf_counter()
        result = action()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), (minor_faults() - faults) // repeats, result


def raw_bytes(state: State) -> int:
    """The size of the tensor data alone, the floor any format pays."""
    return sum(tensor.numel() * tensor.element_size() for tensor in state.values())


def wire_bytes(payload: Any) -> int:
    """Bytes on the wire; text payloads are ASCII, so one byte per character."""
    return len(payload.encode("utf-8")) if isinstance(payload, str) else len(payload)


def max_rel_error(state: State, decoded: State, lossy: bool) -> float:
    """0 for an exact method (anything else aborts); the largest error relative to the tensor's scale for a lossy one."""
    if decoded.keys() != state.keys():
        raise SystemExit("a method lost tensors")
    if not lossy:
        if not all(torch.equal(decoded[k], state[k]) for k in state):
            raise SystemExit("an exact method did not round-trip the state")
        return 0.0
    return max(float((decoded[k] - state[k]).abs().max() / state[k].abs().max().clamp_min(1e-30)) for k in state)


def bench_methods(state: State, small: bool, repeats: int) -> list[Row]:
    """Print and return one row per method."""
    raw = raw_bytes(state)
    print(f"{'method':<30} {'encode ms':>10} {'decode ms':>10} {'wire bytes':>13} {'x raw':>7} {'faults':>7}")
    rows = []
    for method in methods():
        if method.small_only and not small:
            continue
        count = min(repeats, SLOW_REPEATS) if method.slow else repeats
        encode_ms, encode_faults, payload = median_ms(partial(method.encode, state), count)
        decode_ms, decode_faults, decoded = median_ms(partial(method.decode, payload), count)
        size = wire_bytes(payload)
        row = Row(method.label, encode_ms, decode_ms, size, size / raw, encode_faults + decode_faults,
                  max_rel_error(state, decoded, method.lossy))
        print(f"{row.label:<30} {encode_ms:>10.2f} {decode_ms:>10.2f} {size:>13,} {row.ratio:>7.3f} "
              f"{row.faults_per_call:>7,}")
        rows.append(row)
    return rows


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


def bench_base64(state: State, repeats: int) -> dict[str, tuple[float, float]]:
    """Time the base64 step alone with each available backend."""
    blob = codec.encode(state)
    timings = {}
    for label, (to_text, from_text) in base64_backends().items():
        encode_ms, _, text = median_ms(partial(to_text, blob), repeats)
        decode_ms, _, back = median_ms(partial(from_text, text), repeats)
        if back != blob or text != codec.to_text(blob):
            raise SystemExit(f"{label} base64 disagrees with the codec")
        print(f"  base64 step alone, {label:<16} encode {encode_ms:8.2f} ms   decode {decode_ms:8.2f} ms")
        timings[label] = (encode_ms, decode_ms)
    return timings


def base64_share(rows: list[Row]) -> tuple[float, float]:
    """The share of the text path that base64 adds to the binary path, encode and decode."""
    by_label = {row.label: row for row in rows}
    binary, text = by_label[BINARY_LABEL], by_label[PATH_LABEL]
    return (max(text.encode_ms - binary.encode_ms, 0.0) / text.encode_ms,
            max(text.decode_ms - binary.decode_ms, 0.0) / text.decode_ms)


def bench_state(title: str, state: State, small: bool, repeats: int) -> dict[str, Any]:
    """One state: the method table, the base64 step alone and its share of the path."""
    count = sum(tensor.numel() for tensor in state.values())
    print(f"\n== {title}: {count:,} parameters, {raw_bytes(state):,} raw bytes, median of {repeats} ==")
    rows = bench_methods(state, small, repeats)
    share = base64_share(rows)
    print(f"  base64 adds {share[0]:.0%} of encode_text and {share[1]:.0%} of decode_text")
    return {"title": title, "parameters": count, "raw_bytes": raw_bytes(state), "rows": rows,
            "base64": bench_base64(state, repeats), "base64_share": share}


def half_accuracy(rounds: int, source: str, threads: int, seeds: int) -> list[dict[str, Any]]:
    """The main job's training in one process, its messages in float32 and rounded through float16,
    for several seeds: one run's difference could be luck either way."""
    results = []
    for seed in range(1, seeds + 1):
        config = parser.parse(["-nr", str(rounds), "--data", source, "--threads", str(threads), "-s", str(seed)])
        for label, dtype in (("float32", None), ("float16", torch.float16)):
            records: list[dict] = []
            inprocess.run(config, lambda record, point: records.append(record), dtype)
            results.append({"seed": seed, "messages": label, "test_accuracy": records[-1]["test_accuracy"],
                            "test_loss": records[-1]["test_loss"],
                            "best_test_accuracy": max(r["test_accuracy"] for r in records)})
            print(f"  seed {seed}, {label} messages: final test accuracy {records[-1]['test_accuracy']:.4f}, "
                  f"test loss {records[-1]['test_loss']:.4f}", flush=True)
    return results


def half_cost(results: list[dict[str, Any]]) -> str:
    """The mean change in final accuracy and loss that float16 messages make, over the seeds."""
    by_seed = {(r["seed"], r["messages"]): r for r in results}
    seeds = sorted({r["seed"] for r in results})
    accuracy = statistics.fmean(by_seed[s, "float16"]["test_accuracy"] - by_seed[s, "float32"]["test_accuracy"]
                                for s in seeds)
    loss = statistics.fmean(by_seed[s, "float16"]["test_loss"] - by_seed[s, "float32"]["test_loss"] for s in seeds)
    return (f"float16 messages change the final test accuracy by {accuracy * 100:+.2f} points and the test "
            f"loss by {loss:+.4f} on average over {len(seeds)} seeds")


def verdicts(net: dict[str, Any]) -> list[str]:
    """The issue's targets for the Net state, met or not."""
    path = next(row for row in net["rows"] if row.label == PATH_LABEL)
    worst = max(path.encode_ms, path.decode_ms)
    return [f"msgpack+base64 of the Net state: encode {path.encode_ms:.2f} ms, decode {path.decode_ms:.2f} ms "
            f"(target < {TARGET_MS:.0f} ms each way): {'met' if worst < TARGET_MS else 'NOT met'}",
            f"bytes on the wire {path.ratio:.4f} x raw (target <= {TARGET_RATIO} x): "
            f"{'met' if path.ratio <= TARGET_RATIO else 'NOT met'}"]


def markdown(states: list[dict[str, Any]], accuracy: list[dict[str, Any]], header: str) -> str:
    """The tables of BENCHMARKS.md's codec section."""
    lines = [header, ""]
    for state in states:
        lines += [f"### {state['title']}: {state['parameters']:,} parameters, {state['raw_bytes']:,} raw bytes", "",
                  "| method | encode ms | decode ms | wire bytes | x raw | page faults / round trip | max rel. error |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {r.label} | {r.encode_ms:.2f} | {r.decode_ms:.2f} | {r.wire_bytes:,} | {r.ratio:.3f} | "
                  f"{r.faults_per_call:,} | {r.max_rel_error:.1e} |" for r in state["rows"]]
        lines += ["", "| base64 step alone | encode ms | decode ms |", "|---|---:|---:|"]
        lines += [f"| {label} | {enc:.2f} | {dec:.2f} |" for label, (enc, dec) in state["base64"].items()]
        lines += ["", f"base64 adds {state['base64_share'][0]:.0%} of the encode and "
                      f"{state['base64_share'][1]:.0%} of the decode of the wire path.", ""]
    if accuracy:
        lines += ["### Half-precision transport: accuracy", "",
                  "| seed | messages | final test accuracy | final test loss | best test accuracy |",
                  "|---:|---|---:|---:|---:|"]
        lines += [f"| {r['seed']} | {r['messages']} | {r['test_accuracy']:.4f} | {r['test_loss']:.4f} | "
                  f"{r['best_test_accuracy']:.4f} |" for r in accuracy]
        lines += ["", half_cost(accuracy) + "."]
    return "\n".join(lines) + "\n"


def main() -> None:
    """Parse the options, bench both states, measure the half transport's accuracy, write the tables."""
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--repeats", type=int, default=15, help="timed runs per step (median reported)")
    cli.add_argument("--threads", type=int, default=1, help="torch threads, as --threads of a run")
    cli.add_argument("--accuracy-rounds", type=int, default=10, help="rounds of the float16 accuracy run; 0 skips it")
    cli.add_argument("--accuracy-seeds", type=int, default=3, help="seeds of the float16 accuracy runs")
    cli.add_argument("--data", default="embedded", help="data of the accuracy run, as main.py's --data")
    args = cli.parse_args()
    torch.set_num_threads(args.threads)
    base64_in_use = "pybase64" if codec.pybase64 is not None else "stdlib binascii"
    header = (f"torch {torch.__version__}, {args.threads} thread(s), codec base64 backend: {base64_in_use}, "
              f"median of {args.repeats}")
    print(header)
    states = [bench_state("Net state", net_state(), small=True, repeats=args.repeats),
              bench_state("100 MB state", big_state(), small=False, repeats=args.repeats)]
    print("\n== half-precision transport: accuracy ==")
    accuracy = (half_accuracy(args.accuracy_rounds, args.data, args.threads, args.accuracy_seeds)
                if args.accuracy_rounds else [])
    lines = verdicts(states[0]) + ([half_cost(accuracy)] if accuracy else [])
    print("\n" + "\n".join(lines))
    runs.write_text("codec.md", markdown(states, accuracy, header) + "\n" + "\n".join(f"- {v}" for v in lines) + "\n")
    runs.write_json("codec.json", {"header": header, "states": [{**s, "rows": [vars(r) for r in s["rows"]]}
                                                                for s in states],
                                   "half_accuracy": accuracy, "verdicts": lines})


if __name__ == "__main__":
    main()
