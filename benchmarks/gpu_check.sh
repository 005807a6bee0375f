#!/usr/bin/env bash
# The prepared GPU check: one command, at most ~8 minutes on one H100/H200, that installs the project offline,
# measures it beside PyTorch eager and torch.compile on the same chip, and runs the device-independent tests.
#
#   make gpu-wheels                          # here, once: .gpu/wheels (what the GPU image lacks), .gpu/reference
#   OUT=results benchmarks/gpu_check.sh      # there: python3 with jax[cuda] and torch; results under $OUT
#   benchmarks/gpu_check.sh --dry-run        # on CPU, every step at tiny sizes (CI: make gpu-dry-run)
#
# Writes $OUT/gpu_check.json, $OUT/gpu_check.md, $OUT/tests.log, $OUT/nvidia-smi.txt. Sections that would
# overrun the time budget are recorded as not run. Exits non-zero when a step fails.
set -uo pipefail
cd "$(dirname "$0")/.."
dry=""
[ "${1:-}" = "--dry-run" ] && dry="--dry-run"
out=${OUT:-gpu-check}
python=${PYTHON:-python3}
wheels=${WHEELS:-.gpu/wheels}  # the dry run brings the same pins built for its own Python
torch_python=${TORCH_PYTHON:-$python}  # the dry run's PyTorch lives in its own environment
total_s=${GPU_CHECK_BUDGET_S:-450}
deadline=$((SECONDS + total_s))
mkdir -p "$out"
site=$(mktemp -d)/site
failed=()
step() { echo "== $* ($((deadline - SECONDS)) s left)"; }

step "offline install: the wheelhouse, the project's wheel included (--no-deps), into a scratch site"
[ -d "$wheels" ] && [ -f .gpu/reference/torch_cifar_resnet.py ] || {
  echo "error: $wheels or .gpu/reference missing: run 'make gpu-wheels' first" >&2; exit 2; }
"$python" -m pip install -q --no-index --no-deps --no-compile --target "$site" "$wheels"/*.whl || exit 2
files() { (cd "$1" && find -L . -type f ! -path '*__pycache__*' | sort | xargs sha256sum); }
# the wheel holds the checkout's files and the kernels its build compiled (checked by their SHA-256 when loaded)
diff <(files "$site/resnet_jax" | grep -v ' \./ops/libresnet_jax_onednn\.') <(files resnet_jax) || {
  echo "error: the project's wheel in $wheels is not this checkout: run 'make gpu-wheels' again" >&2; exit 2; }
export PYTHONPATH="$site" WANDB_MODE=disabled PYTHONUNBUFFERED=1
"$python" benchmarks/gpu_wheels.py --check-site "$site" || exit 2

step "the device"
if [ -n "$dry" ]; then
  echo "dry run on $(uname -m), no GPU" | tee "$out/nvidia-smi.txt"
  export JAX_PLATFORMS=cpu
  torch_device=cpu
else
  nvidia-smi | tee "$out/nvidia-smi.txt" || failed+=(nvidia-smi)
  "$python" -c "import jax; assert jax.default_backend() == 'gpu', jax.devices(); print(jax.devices())" \
    || { echo "error: JAX sees no GPU" >&2; exit 2; }
  torch_device=cuda
fi

step "resnet_jax: speed, compile time, memory"
jax_budget=$(( (deadline - SECONDS) * ${GPU_CHECK_JAX_SHARE:-45} / 100 ))  # percent of what is left
# half the GPU's memory: the recipe runs in a second process beside this one
XLA_PYTHON_CLIENT_MEM_FRACTION=0.5 "$python" benchmarks/gpu_check.py $dry ${GPU_CHECK_ONLY:+--only $GPU_CHECK_ONLY} --budget-s "$jax_budget" --output "$out/jax.json" || failed+=(jax-bench)

step "PyTorch references on the same device"
: > "$out/torch.jsonl"
torch_ref() {  # depth, compile mode ('' = eager), time limit
  local depth=$1 mode=$2 limit=$3 args=()
  [ -n "$mode" ] && args=(--compile "$mode")
  if [ -n "$dry" ]; then args+=(--batch 8 --steps 2 --warmup 1); else args+=(--batch 128 --steps 30); fi
  if (( deadline - SECONDS < limit )); then
    echo "{\"framework\": \"torch\", \"depth\": $depth, \"compile\": \"$mode\", \"error\": true, \"reason\": \"not run: time budget\"}" >> "$out/torch.jsonl"
    return
  fi
  local row
  if row=$(timeout "$limit" "$torch_python" .gpu/reference/torch_cifar_resnet.py --depth "$depth" --device "$torch_device" "${args[@]}" | tail -1); then
    echo "$row" | tee -a "$out/torch.jsonl"
  else
    echo "{\"framework\": \"torch\", \"depth\": $depth, \"compile\": \"$mode\", \"error\": true, \"reason\": \"failed or over ${limit} s\"}" | tee -a "$out/torch.jsonl"
  fi
}
# TORCH_RUNS: depth:mode:seconds ('eager' = no torch.compile). torch 2.11's CUDA graphs (reduce-overhead,
# max-autotune) stop the reference's optimiser step ("accessing tensor output of CUDAGraphs that has been
# overwritten"): the default runs also time the compile modes without them
default_runs="20:eager:60 56:eager:60 110:eager:60 20:default:90 20:reduce-overhead:90 20:max-autotune-no-cudagraphs:150"
[ -n "$dry" ] && default_runs="8:eager:120 8:default:300"
for run in ${TORCH_RUNS:-$default_runs}; do
  IFS=: read -r depth mode limit <<< "$run"
  torch_ref "$depth" "${mode/eager/}" "$limit"
done

step "the device-independent tests on this backend"
if [ -n "$dry" ]; then tests=(tests/test_config.py); else
  tests=(tests/test_models.py tests/test_optim.py tests/test_probes.py tests/test_training.py tests/test_resume.py
         tests/test_data.py tests/test_report.py tests/test_population.py); fi
[ -n "${GPU_CHECK_TESTS:-}" ] && read -r -a tests <<< "$GPU_CHECK_TESTS"  # e.g. "tests/test_population.py"
test_limit=$(( deadline - SECONDS > 30 ? deadline - SECONDS : 30 ))
# SIGINT at the limit: pytest stops and still prints what passed and failed
XLA_PYTHON_CLIENT_PREALLOCATE=false timeout -s INT "$test_limit" "$python" -m pytest -q -p no:cacheprovider \
  -m "not slow and not cluster" "${tests[@]}" 2>&1 | tee "$out/tests.log"
[ "${PIPESTATUS[0]}" = 0 ] || failed+=(tests)

step "the table"
"$python" benchmarks/gpu_check.py --merge "$out/jax.json" "$out/torch.jsonl" \
  --table "$out/gpu_check.md" --json "$out/gpu_check.json" || failed+=(merge)
if [ ${#failed[@]} -gt 0 ]; then echo "error: failed: ${failed[*]}" >&2; exit 1; fi
echo "gpu check done in ${SECONDS} s"
