"""Every kind of run on CUDA, checked against the same run on the CPU and on the other backend.

    python bench/cuda_check.py [--modes fedavg,fedsgd,dp,gan,gan-dp,wgan] [--rounds 3]

For each mode: gloo on CUDA twice (is a rerun the same model?), the vantage6 mock on CUDA (do the
backends agree?), and gloo on the CPU (how far is the CUDA model from the CPU's?). Without a GPU,
-uc falls back to the CPU and every run is a CPU run. Writes bench/results/cuda-check.{md,json}.
"""
import argparse
import sys
from pathlib import Path

import torch

import runs

MODES = {
    "fedavg": [],
    "fedsgd": ["-sgd"],
    "dp": ["-ldp"],
    "gan": ["-gan", "-e", "1"],
    "gan-dp": ["-gan", "-ldp", "-e", "1"],
    "wgan": ["-gan", "--synthesizer", "wgan", "-e", "1"],
}
SIDES = {"gloo CUDA": ("gloo", True), "gloo CUDA, rerun": ("gloo", True), "mock CUDA": ("vantage6", True),
         "gloo CPU": ("gloo", False)}


def max_difference(first: Path, second: Path) -> float:
    """The largest absolute difference between two saved models' parameters."""
    a, b = (torch.load(path / "model.pt", weights_only=True) for path in (first, second))
    return max(float((a[name].double() - b[name].double()).abs().max()) for name in a if a[name].is_floating_point())


def check(mode: str, rounds: int, scratch: Path) -> dict:
    """One mode on every side; the comparisons that say whether CUDA gives what the CPU does."""
    common = ["-nn", "3", "-nr", str(rounds), "-sm", "-s", "1", *MODES[mode]]
    done = {}
    for side, (backend, cuda) in SIDES.items():
        output = scratch / mode / side.replace(" ", "-").replace(",", "")
        command = [*runs.MAIN, "--backend", backend, *common, *(["-uc"] if cuda else []), "--output", str(output)]
        done[side] = (runs.run(command, output), output)
        result = done[side][0]
        print(f"{mode:<7} {side:<17} wall {result.wall_s:6.1f} s, rounds {result.rounds_s:6.1f} s, "
              f"model {result.digest}", flush=True)
    digest = {side: result.digest for side, (result, _) in done.items()}
    accuracy = done["gloo CUDA"][0].accuracy[-1]
    return {"mode": mode, "options": " ".join(common),
            "wall_s": {side: result.wall_s for side, (result, _) in done.items()},
            "rounds_s": {side: result.rounds_s for side, (result, _) in done.items()},
            "rerun_identical": digest["gloo CUDA"] == digest["gloo CUDA, rerun"],
            "backends_identical": digest["gloo CUDA"] == digest["mock CUDA"],
            "max_difference_from_cpu": max_difference(done["gloo CUDA"][1], done["gloo CPU"][1]),
            "accuracy_cuda": accuracy, "accuracy_cpu": done["gloo CPU"][0].accuracy[-1]}


def markdown(rows: list[dict], header: str) -> str:
    lines = [header, "", "| mode | options | gloo CUDA s | mock CUDA s | gloo CPU s | rerun identical | "
             "gloo = mock on CUDA | max abs difference CUDA vs CPU | final acc. CUDA / CPU |",
             "|---|---|---:|---:|---:|---|---|---:|---|"]
    for r in rows:
        accuracy = "-" if r["accuracy_cuda"] is None else f"{r['accuracy_cuda']:.4f} / {r['accuracy_cpu']:.4f}"
        lines.append(f"| {r['mode']} | `{r['options']}` | {r['wall_s']['gloo CUDA']:.1f} | "
                     f"{r['wall_s']['mock CUDA']:.1f} | {r['wall_s']['gloo CPU']:.1f} | "
                     f"{'yes' if r['rerun_identical'] else 'NO'} | {'yes' if r['backends_identical'] else 'NO'} | "
                     f"{r['max_difference_from_cpu']:.2e} | {accuracy} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--modes", default=",".join(MODES))
    cli.add_argument("--rounds", type=int, default=3)
    cli.add_argument("--scratch", type=Path, default=Path("/tmp/ppsdg-cuda-check"))
    args = cli.parse_args()
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU: every run is on the CPU"
    header = f"Machine: {runs.machine()}; {device}. Every run: `main.py` with the options shown."
    print(header, flush=True)
    rows = [check(mode, args.rounds, args.scratch) for mode in args.modes.split(",")]
    table = markdown(rows, header)
    print("\n" + table)
    runs.write_text("cuda-check.md", table)
    runs.write_json("cuda-check.json", {"header": header, "rows": rows})
    if not all(r["rerun_identical"] and r["backends_identical"] for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
