#!/bin/sh
# The default benchmark suite, as BENCHMARKS.md reports it (about 35 minutes on 2 cores).
# Longer runs: see each script's --help (e.g. bench_accuracy.py /path/to/mnist --budget-s 900).
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
uptime
