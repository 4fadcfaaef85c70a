#!/usr/bin/env bash
# The GPU figures of "each framework at its best" and "inference and energy", in one run: every
# step bounded by `timeout`, its output in $OUT/<step>.txt and its records in $OUT/<step>/, a
# summary of exit codes at the end. About ten minutes on an H100 or H200 with torch, jax, flax,
# optax, keras and nvidia-ml-py installed (TensorFlow is measured where it is installed too).
#
#   bash benchmarks/gpu_figures.sh                       # OUT=gpu-figures DEVICE=gpu
#   DEVICE=cpu LIMIT_SCALE=0.2 bash benchmarks/gpu_figures.sh   # the script itself, on a CPU
#
# Steps (the goal each one measures):
#   doctor     device, sync, peaks per precision, memory (`bench doctor --device gpu`)
#   hand_mlp   tuned torch/JAX mlp_mnist cells (batch 128) against the best hand loop: >= 0.95x
#   hand_cnn   the same for cnn_mnist (batch 64)
#   frontends  Flax (functional step) and Keras on JAX against raw JAX, mlp_mnist: <= 1.3x, 1.5x
#   resnet     resnet_cifar (synthetic, batch 256) bf16 against fp32 on torch and JAX: >= 1.5x
#   conv2d     the conv2d microbenchmark's full profile: device time per case, % of the peak
#   inference  p50/p99 and joules per sample, torch and JAX, mlp_mnist and cnn_mnist
#   energy     training energy to the target accuracy (torch, mlp_mnist)
set -u
OUT=${OUT:-gpu-figures}
DEVICE=${DEVICE:-gpu}
LIMIT_SCALE=${LIMIT_SCALE:-1}
PYTHON=${PYTHON:-python}
BENCH=("$PYTHON" -m fwbench.cli)
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT"
SUMMARY=()

step() {  # step NAME SECONDS COMMAND...: run it bounded, keep its output, say how it ended
    local name=$1 limit
    limit=$(awk -v s="$2" -v k="$LIMIT_SCALE" 'BEGIN { printf "%d", s * k + 1 }')
    shift 2
    echo "== $name (at most ${limit} s): $*"
    timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.txt" 2>&1
    local rc=$?
    tail -n 25 "$OUT/$name.txt"
    SUMMARY+=("$name: exit $rc$([ "$rc" = 124 ] && echo ' (timed out)')")
}

MNIST=(--dataset mnist_5k --device "$DEVICE" --no-progress)
TORCH_BEST=(--suite-set torch:dataset.placement=device --suite-set torch:training.precision=bf16
            --suite-set "torch:backend.execution=compiled+cudagraphs")
JAX_BEST=(--suite-set jax:dataset.placement=device --suite-set jax:training.precision=bf16)
if [ "$DEVICE" = cpu ]; then  # CUDA graphs are a GPU mode
    TORCH_BEST=(--suite-set torch:training.precision=bf16 --suite-set torch:backend.execution=compiled)
fi

step doctor 90 "${BENCH[@]}" doctor --device "$DEVICE" --no-conformance
step hand_mlp 110 "$PYTHON" "$HERE/hand_loops.py" --device "$DEVICE" --task mlp_mnist --frameworks torch,jax \
    --rounds 2 --steps 500 --suite "${TORCH_BEST[@]}" "${JAX_BEST[@]}"
step hand_cnn 110 "$PYTHON" "$HERE/hand_loops.py" --device "$DEVICE" --task cnn_mnist --frameworks torch,jax \
    --rounds 2 --steps 300 --suite "${TORCH_BEST[@]}" "${JAX_BEST[@]}"
step frontends 70 "${BENCH[@]}" run -b jax,flax,keras -t mlp_mnist "${MNIST[@]}" --profile quick --repeat 2 \
    --set backend.engine=jax --set backend.step=functional --set dataset.placement=device -o "$OUT/frontends"
step resnet 100 "${BENCH[@]}" run -b torch,jax -t resnet_cifar --dataset synthetic --device "$DEVICE" --no-progress \
    --profile quick --set training.precision=fp32,bf16 --set training.batch_size=256 -o "$OUT/resnet"
step conv2d 60 "${BENCH[@]}" run -b torch,jax -t conv2d --device "$DEVICE" --no-progress --profile full \
    -o "$OUT/conv2d"
step inference 60 "${BENCH[@]}" run --scenario inference -b torch,jax -t mlp_mnist,cnn_mnist "${MNIST[@]}" \
    --repeat 2 -o "$OUT/inference"
step energy 60 "${BENCH[@]}" run -b torch -t mlp_mnist "${MNIST[@]}" -o "$OUT/energy"
for run in frontends resnet conv2d inference energy; do
    [ -d "$OUT/$run" ] && "${BENCH[@]}" report "$OUT/$run" -o "$OUT/$run.html" > /dev/null 2>&1
done
printf '%s\n' "== summary" "${SUMMARY[@]}"
