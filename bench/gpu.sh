#!/bin/sh
# The GPU figures of BENCHMARKS.md and the CUDA checks, on a machine with a GPU where ppsdg's
# requirements are importable (about 11 minutes on one H100). Each step is bounded, and one that
# fails does not stop the others; the exit status says whether all passed.
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
$PYTHON -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.get_device_name(0))"
uptime
status=0
step() {
    echo "== $*"
    timeout 300 "$@" || { echo "== failed ($?): $*"; status=1; }
}
step $PYTHON bench/bench_throughput.py --batch-sizes 10,64,512 --seconds 3
step $PYTHON bench/bench_overhead.py --use-cuda --cores 2 --repeats 2 --name overhead-cuda
step $PYTHON bench/cuda_check.py --modes fedavg,fedsgd,dp,gan-dp,wgan --rounds 2
uptime
exit $status
