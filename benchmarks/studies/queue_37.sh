#!/bin/sh
# Issue 37's preregistered runs in the order of PREREGISTRATION.md (amendment of 21:25 UTC: H's toys before K; H's board-plain32x3, done, is archived):
# each step is resumable, so running this again after a stop goes on where it stopped.  nohup sh benchmarks/studies/queue_37.sh > runs/queue_37.log 2>&1 &
set -e
cd "$(dirname "$0")/../.."
python benchmarks/run_study.py benchmarks/studies/methods_toys.toml --only board_late-plain32x3
python benchmarks/run_study.py benchmarks/studies/methods_toys.toml
python benchmarks/run_study.py benchmarks/studies/cifar8_methods.toml
