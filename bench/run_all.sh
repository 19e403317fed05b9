#!/bin/sh
# The default benchmark suite behind BENCHMARKS.md (about 25 minutes on 2 quiet cores).
# Longer runs are options of the scripts, e.g.
#   python bench/bench_accuracy.py /path/to/mnist --targets 0.97,0.98 --budget-s 480
set -e
cd "$(dirname "$0")/.."
uptime
python bench/bench_codec.py
python bench/bench_overhead.py
python bench/bench_scale.py
python bench/bench_throughput.py
python bench/bench_accuracy.py
python bench/profile_run.py gloo -- python main.py --backend gloo --output /tmp/ppsdg-profile-gloo
python bench/profile_run.py vantage6-mock -- python main.py --backend vantage6 --output /tmp/ppsdg-profile-mock
python bench/profile_run.py single-2-threads -- python bench/inprocess.py --threads 2 --output /tmp/ppsdg-profile-single
uptime
