#!/bin/sh
# After K's landscape (benchmarks/studies/cifar8_methods.toml) has finished: its page from the runs, its archive, and
# the one table and default rule over the toys and CIFAR-10 (PREREGISTRATION.md, addendum of 2026-12-08 00:02 UTC).
#   sh benchmarks/studies/finish_cifar8_methods.sh
# Then add to the study file `measured = "benchmarks/results/cifar/cifar8_methods-landscape.json"` and
# `[report] pages = ["methods_cifar"]`, and check that `python benchmarks/run_study.py
# benchmarks/studies/cifar8_methods.toml --report` writes the same page (tests/test_studies.py checks it).
set -e
cd "$(dirname "$0")/../.."
test -f runs/cifar8_methods/landscape.json || { echo "error: runs/cifar8_methods/landscape.json is missing: K has not" \
  "finished; run: python benchmarks/run_study.py benchmarks/studies/cifar8_methods.toml" >&2; exit 2; }
python - <<'PY'
import sys
sys.path.insert(0, "benchmarks")
import run_study
study = run_study.load("benchmarks/studies/cifar8_methods.toml")
study["report"] = {"pages": ["methods_cifar"]}
sys.exit(run_study.write_pages(study, run_study.expand(study), from_runs=True))
PY
mkdir -p benchmarks/results/cifar
cp runs/cifar8_methods/landscape.json benchmarks/results/cifar/cifar8_methods-landscape.json
python benchmarks/default_choice.py
