#!/usr/bin/env bash
# Submit one hpcvmc run as a chain of N dependent jobs, for runs longer than a partition's time
# limit (or on sites where jobs may not requeue themselves).
#
#   bash slurm/chain.sh N FILE.toml [hpcvmc run arguments ...]
#   HPCVMC_CHAIN_SBATCH="--time=24:00:00 --ntasks=4" bash slurm/chain.sh 5 jobs/big.toml
#
# What it does: submits slurm/run.sbatch N times; link k+1 depends on link k with
# `--dependency=afterany:<id of link k>`, so it starts when link k has ended, however it ended.
# Every link runs the same command, and `hpcvmc run` resumes from the newest checkpoint in
# run.output, so each link continues where the previous one stopped: at its time limit the
# link gets USR1 (run.sbatch's --signal=B:USR1@...), hpcvmc checkpoints and exits 75, and the
# next link takes over. Links do not requeue themselves (HPCVMC_REQUEUE=0), and all carry one
# job name (HPCVMC_CHAIN_NAME, default hpcvmc-chain-<date>-<pid>): when a link finishes the run
# (exit 0) or fails (exit 1, 2, 3, ...), it cancels the links still pending (HPCVMC_CHAIN=1).
# Prints the job ids, first to last.
#
# What to edit: nothing here; resources go in run.sbatch's #SBATCH lines or in
# HPCVMC_CHAIN_SBATCH (extra sbatch options for every link, e.g. "--time=24:00:00
# --partition=long"). The run.output must be the same for every link: it is, unless the input
# or arguments are changed between submissions. Run from the repository root (or set
# HPCVMC_RUN_SCRIPT to run.sbatch's path).
set -euo pipefail

if [ $# -lt 2 ] || ! [[ $1 =~ ^[1-9][0-9]*$ ]]; then
    sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//' >&2
    echo "chain.sh: need the number of links (>= 1) and an input file" >&2
    exit 2
fi
links=$1
shift
[ -f "$1" ] || { echo "chain.sh: no input file $1" >&2; exit 2; }

run_script=${HPCVMC_RUN_SCRIPT:-$(cd "$(dirname "$0")" && pwd)/run.sbatch}
[ -f "$run_script" ] || { echo "chain.sh: $run_script not found" >&2; exit 2; }
name=${HPCVMC_CHAIN_NAME:-hpcvmc-chain-$(date +%Y%m%d%H%M%S)-$$}
# shellcheck disable=SC2206
extra=(${HPCVMC_CHAIN_SBATCH:-})

# The links' environment (sbatch passes the submitting environment on to the job).
export HPCVMC_REQUEUE=0 HPCVMC_CHAIN=1

ids=()
previous=
for ((k = 1; k <= links; k++)); do
    dependency=()
    [ -n "$previous" ] && dependency=(--dependency="afterany:$previous")
    previous=$(sbatch --parsable --job-name="$name" "${dependency[@]}" "${extra[@]}" \
                      "$run_script" "$@")
    previous=${previous%%;*}   # "id;cluster" on multi-cluster sites
    ids+=("$previous")
    echo "chain.sh: link $k/$links: job $previous${dependency:+ (${dependency[0]#--})}"
done
echo "chain.sh: chain '$name': ${ids[*]}"
