#!/bin/sh
# Issue 37's preregistered runs still to make, in the order of PREREGISTRATION.md (H and L are done and archived;
# their pages come from `--report`): the small JiT's capacity check (addendum I's amendment), then K. Each step is
# resumable, so running this again after a stop goes on where it stopped:
#   nohup sh benchmarks/studies/queue_37.sh > runs/queue_37.log 2>&1 &
set -e
cd "$(dirname "$0")/../.."
python benchmarks/run_study.py benchmarks/studies/cifar16_jit_capacity.toml
python benchmarks/run_study.py benchmarks/studies/cifar8_methods.toml
