"""ppsdg's launcher: `python main.py --backend gloo|vantage6 [options]`; `--help` lists them."""
import os
import socket
import sys

import torch.multiprocessing as mp

import train
from ppsdg import data, parser
from ppsdg.errors import PpsdgError


def launch_gloo(options) -> None:
    """Under torchrun, be the rank it asked for; otherwise spawn server and workers on this machine."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        train.run_from_env(options)
        return
    check_data(options)
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ["MASTER_PORT"] = str(free_port())
    mp.spawn(train.run_rank, args=(options.num_nodes, options), nprocs=options.num_nodes, join=True)


def check_data(options) -> None:
    """Load and partition once here, so a bad file or partitioning fails with a message, not in a child."""
    train_set, _ = data.load(options.data)
    data.partition(train_set.labels, options.num_nodes - 1, options.partition, options.seed,
                   options.dirichlet_alpha, options.classes_per_worker)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    try:
        options = parser.parse(argv)
        if options.backend == "gloo":
            launch_gloo(options)
        else:
            raise PpsdgError("the vantage6 backend is not available in this version yet")
    except PpsdgError as error:
        print(f"ppsdg: error: {error}", file=sys.stderr)
        return 2
    print(f"results in {options.output}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
