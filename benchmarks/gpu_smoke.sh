#!/usr/bin/env bash
# GPU smoke check (issue "Evidence and speed"): train a small CIFAR-10 UNet with N = 2 experts for a few hundred steps
# per expert in bf16, sample a 64-image grid, then run benchmarks/speed.py train_throughput sampling (SiT-S/2, SiT-B/2,
# eager and torch.compile). Records the card, the date, img/s and the grid under $OUT.
#
# Prepare once on the CPU machine:  bash benchmarks/prepare_gpu.sh        (fills the ignored .whl/ and data/cifar10/)
# On the lent GPU (device tool):    run(command="bash benchmarks/gpu_smoke.sh", carry=[".whl", "data"], timeout_s=540)
# CPU dry run (shrinks everything): CBS_CPU_DRY_RUN=1 bash benchmarks/gpu_smoke.sh
# CBS_SKIP_COMPILE=1 leaves out the torch.compile timings (they add one to two minutes of compilation).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1
PY=${PYTHON:-python3}
DRY=${CBS_CPU_DRY_RUN:-0}
OUT=${OUT:-runs/gpu_smoke_out}
RUN=runs/gpu_smoke
mkdir -p "$OUT"

main() {
# 1. Packages the GPU image lacks, from the carried wheels.
missing=()
for pair in gin:gin-config webdataset:webdataset torch_fidelity:torch-fidelity braceexpand:braceexpand torchdiffeq:torchdiffeq; do
    $PY -c "import ${pair%%:*}" 2>/dev/null || missing+=("${pair#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing from .whl/: ${missing[*]}"
    $PY -m pip install --no-index --find-links .whl "${missing[@]}"
fi

# 2. Data (copied by prepare_gpu.sh; ../shared does not travel to the device machine).
DATA=data/cifar10
if [ ! -d "$DATA" ]; then
    if [ "$DRY" = 1 ] && [ -d ../shared/data/cifar10 ]; then DATA=../shared/data/cifar10
    else echo "error: no $DATA; run benchmarks/prepare_gpu.sh first and carry 'data'"; exit 2; fi
fi

# 3. The machine.
echo "== machine"; date -u
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>/dev/null || echo "no nvidia-smi (CPU)"
$PY -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__, 'cuda', torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'CPU')"

# 4. The pipeline: profile (aux UNet + Dirichlet monitor) -> split (de Boor, N = 2) -> train -> sample (no FID).
if [ "$DRY" = 1 ]; then
    S=(4 4 8 "'no'" 16 4 8 8 4); SPEED=(--device cpu --sizes S --batch 2 --warmup 1 --steps 1 --repeats 2 --sampling-steps 4 --loop bare)
else
    S=(300 200 128 "'bf16'" 64 16 128 64 50); SPEED=(--device cuda --compile)
    [ "${CBS_SKIP_COMPILE:-0}" = 1 ] && SPEED=(--device cuda)
fi
STEPS=${S[0]} AUX=${S[1]} BATCH=${S[2]} PREC=${S[3]} CH=${S[4]} NPTS=${S[5]} NPROF=${S[6]} NSAMP=${S[7]} NSTEPS=${S[8]}
echo "== pipeline: N=2, unet.channels=$CH, $STEPS steps per expert, batch $BATCH, $PREC"
rm -rf "$RUN"
$PY tools/run.py --gin gin/cifar10_unet.gin --run-dir "$RUN" --stages profile,split,train,sample \
    --bind "DATA_DIR = '$DATA'" --bind "N_SEGMENTS = 2" --bind "unet.channels = $CH" \
    --bind "aux/training.steps = $AUX" --bind "aux/training.batch_size = $BATCH" --bind "aux/training.mixed_precision = $PREC" \
    --bind "profile.n_points = $NPTS" --bind "profile.n_samples = $NPROF" \
    --bind "expert/training.steps = $STEPS" --bind "expert/training.batch_size = $BATCH" --bind "expert/training.mixed_precision = $PREC" \
    --bind "expert/training.warmup_steps = 50" --bind "expert/training.ema_decay = 0.0" --bind "expert/training.checkpoint_every = 0" \
    --bind "expert/training.log_every = $(( STEPS / 4 > 0 ? STEPS / 4 : 1 ))" \
    --bind "sample.n_samples = $NSAMP" --bind "sample.batch_size = $NSAMP" --bind "sample.n_steps = $NSTEPS"

# img/s of each expert from its training log, excluding the first logged interval (start-up, cuDNN autotuning).
$PY - "$RUN" "$BATCH" "$OUT/pipeline.json" <<'PY'
import json, sys
from pathlib import Path
run, batch, out = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
experts = []
for log in sorted(run.glob("checkpoints/segment_*/log.jsonl")):
    rows = [json.loads(line) for line in log.open()]
    first, last = rows[0], rows[-1]
    ips = (last["step"] - first["step"]) * batch / max(1e-9, last["seconds"] - first["seconds"])
    experts.append({"expert": log.parent.name, "img_per_s": ips, "steps": last["step"], "final_loss": last["loss"],
                    "timed_from_step": first["step"]})
    print(f"{log.parent.name}: {ips:.1f} img/s (steps {first['step']}..{last['step']}, batch {batch}), final loss {last['loss']:.4f}")
split = json.loads((run / "split.json").read_text())
print("boundaries", split["boundaries"])
json.dump({"experts": experts, "boundaries": split["boundaries"], "batch": batch}, open(out, "w"), indent=2)
PY
cp "$RUN/samples.png" "$RUN/profile.png" "$OUT/"

# 5. Speed: SiT-S/2 and SiT-B/2 training throughput + MFU (batch 256, bf16) and the cost per sampling step, N=4 vs N=1.
echo "== speed"
$PY benchmarks/speed.py train_throughput sampling "${SPEED[@]}" --out "$OUT"
echo "== done"; date -u; ls -l "$OUT"
}

main 2>&1 | tee "$OUT/gpu_smoke.log"
exit "${PIPESTATUS[0]}"
