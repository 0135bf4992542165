#!/usr/bin/env bash
# Fill the ignored folders that benchmarks/gpu_smoke.sh needs on a lent GPU machine (which cannot reach the network):
#   .whl/         wheels of the packages its image lacks (pure-Python, pinned to the versions installed here)
#   data/cifar10/ two CIFAR-10 train shards + the test shard (about 10 MB)
# Then, from the device tool:  run(command="bash benchmarks/gpu_smoke.sh", carry=[".whl", "data"], timeout_s=540)
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=${CIFAR_SRC:-../shared/data/cifar10}
PY=${PYTHON:-python}

pins=$($PY - <<'PY'
from importlib.metadata import PackageNotFoundError, version
out = []
for name in ("gin-config", "webdataset", "torch-fidelity", "braceexpand", "torchdiffeq"):
    try:
        out.append(f"{name}=={version(name)}")
    except PackageNotFoundError:
        out.append(name)
print(" ".join(out))
PY
)
mkdir -p .whl data/cifar10
echo "downloading wheels: $pins"
# shellcheck disable=SC2086
$PY -m pip download --no-deps --only-binary=:all: -d .whl $pins
for f in cifar10-train-000000.tar.gz cifar10-train-000001.tar.gz cifar10-test-000000.tar.gz; do
    cp "$SRC/$f" data/cifar10/
done
ls -l .whl data/cifar10
du -sh .whl data
