#!/bin/sh
# Issue 37's preregistered runs still to make, in the order of PREREGISTRATION.md (H, L, M and the small JiT's
# capacity check are done and archived; their pages come from `--report`): K, then its page, archive and the
# default's rule (finish_cifar8_methods.sh). K is resumable, so running this again after a stop goes on where it
# stopped:
#   nohup sh benchmarks/studies/queue_37.sh > runs/queue_37.log 2>&1 &
set -e
cd "$(dirname "$0")/../.."
python benchmarks/run_study.py benchmarks/studies/cifar8_methods.toml
sh benchmarks/studies/finish_cifar8_methods.sh
