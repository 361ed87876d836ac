#!/usr/bin/env bash
# GPU readiness check for a fresh clone on a machine with one GPU (target: under 8 minutes).
#
#   bash bench/gpu_check.sh                  # GPU: install the CUDA jax, device tests, step table
#   bash bench/gpu_check.sh --platform cpu   # dry run on the CPU: no CUDA install, tiny sizes
#
# Steps: (1) the venv of .ci/install (made when .venv is missing); (2) on a GPU, pip installs
# "jax[cuda12]" at the version of the installed jax and checks that jax sees a GPU; (3) the
# tests that touch the device path (device binding, Jacobian, minSR, mixed precision; on the
# CPU dry run only the fast device-binding tests); (4) one timed step (after a compiling one)
# of the 6 x 6 ViT, the published 10 x 10 ViT and the 27-site Psiformer (started from the band
# orbitals: the Hartree-Fock search of its job input takes minutes on the host and does not
# change the cost of a step), in float64 and float32, with the peak device memory
# (bench/device_step.py), printed as one table. The CPU dry run checks the plumbing with four
# of the six steps: the 6 x 6 ViT in both dtypes, the two others in float32 (their float64
# paths, the same code at other sizes, are those of the whole test suite).
# The platform is selected as in hpcvmc (run.platform, hpcvmc.parallel.bind_device):
# "cpu" hides accelerators, "gpu" requires one. Extra --set options go to every timed step.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
platform=gpu
sets=()
while [ $# -gt 0 ]; do
    case $1 in
        --platform) platform=$2; shift 2 ;;
        --set) sets+=(--set "$2"); shift 2 ;;
        -h|--help) sed -n 2,17p "$0"; exit 0 ;;
        *) echo "gpu_check: unknown option $1 (--platform cpu|gpu, --set key=value)" >&2; exit 2 ;;
    esac
done
case $platform in cpu|gpu) ;; *) echo "gpu_check: --platform must be cpu or gpu" >&2; exit 2 ;; esac
start=$(date +%s)
timed_jobs=(jobs/vit_6x6_factored.toml jobs/vit_10x10_published.toml jobs/psiformer_27sites_eps10.toml)
export OPENBLAS_NUM_THREADS=1 PYTHONPATH=$repo
py=$repo/.venv/bin/python

if [ ! -x "$py" ]; then
    echo "gpu_check: making the venv (bash .ci/install)"
    bash .ci/install > /tmp/gpu_check_install.log 2>&1 || { tail -20 /tmp/gpu_check_install.log; exit 1; }
fi
if [ "$platform" = gpu ]; then
    version=$("$py" -c 'import jax; print(jax.__version__)')
    echo "gpu_check: installing jax[cuda12]==$version"
    "$py" -m pip install -q "jax[cuda12]==$version"
    "$py" -c 'import jax; d = jax.devices(); assert d[0].platform == "gpu", d; print("gpu_check: devices", d)'
    export JAX_PLATFORMS=cuda
    threads=0
    tests=(tests/test_parallel.py tests/test_jacobian.py tests/test_minsr.py tests/test_mixed_precision.py)
    pytest_k=()
    timed=()
    for job in "${timed_jobs[@]}"; do timed+=("$job float64" "$job float32"); done
    sizes=(--set system.chunk_size=16384 --set optimizer.chunk_size=1024 --set sampler.burn_in=20)
    psi_sizes=(--set sampler.burn_in=20 --set model.init=bands)
else
    export JAX_PLATFORMS=cpu
    threads=1
    tests=(tests/test_parallel.py)
    pytest_k=(-k bind)
    timed=("${timed_jobs[0]} float64" "${timed_jobs[0]} float32" "${timed_jobs[1]} float32"
           "${timed_jobs[2]} float32")
    tiny=(--set sampler.n_chains=2 --set sampler.n_samples=4 --set sampler.burn_in=1)
    sizes=("${tiny[@]}" --set model.n_layers=1 --set model.d_model=8 --set model.n_heads=2
           --set optimizer.chunk_size=4)
    psi_sizes=("${tiny[@]}" --set model.init=bands --set sampler.sweeps=1 --set model.n_layers=1
               --set model.width=8 --set model.n_heads=2 --set model.n_determinants=1 --set model.g_max=1.0
               --set system.chunk_size=4 --set optimizer.chunk_size=4)
fi

echo "gpu_check: tests on $platform: ${tests[*]} ${pytest_k[*]}"
"$py" -m pytest -q -x "${tests[@]}" "${pytest_k[@]}" 2>&1 | tail -3
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "gpu_check: tests failed" >&2; exit 1; }

table=$(mktemp)
for pair in "${timed[@]}"; do
    read -r job dtype <<< "$pair"
    case $job in *psiformer*) extra=("${psi_sizes[@]}") ;; *) extra=("${sizes[@]}") ;; esac
    "$py" bench/device_step.py --platform "$platform" --threads "$threads" --job "$job" \
        "${extra[@]}" "${sets[@]}" --set "model.dtype=$dtype" | grep '^|' >> "$table"
done
echo
echo "| job | dtype | samples | P | compile s | s/step | peak device memory MiB |"
echo "|---|---|---|---|---|---|---|"
cat "$table"
rm -f "$table"
echo
echo "gpu_check: passed on $platform in $(( $(date +%s) - start )) s"
