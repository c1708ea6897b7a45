#!/bin/bash
# Shared launcher for the sbatch scripts: picks the run dir, decides how to resume, and starts one
# process per GPU with srun. Extra arguments are passed to `merv fit` (e.g. --trainer.strategy fsdp), started as
# `$PYTHON -m merv.cli fit` so that the nodes need no console script on their PATH.
set -euo pipefail
: "${CONFIG:?set CONFIG to an experiment yaml}"
RUN_DIR=${RUN_DIR:-outputs/${SLURM_JOB_NAME}-${SLURM_JOB_ID}}
PYTHON=${PYTHON:-python}
mkdir -p "$RUN_DIR"

# Resume from the newest checkpoint of the run: the hpc checkpoint Lightning writes on SIGUSR1 before the
# time limit (in the run dir), or a `last*.ckpt` ModelCheckpoint wrote later (after a requeue, or before a
# crash or preemption). Left to itself Lightning would prefer any hpc checkpoint, however old, so the
# choice is made here, by modification time. FSDP's sharded checkpoints are folders: they count too.
newest=$(find "$RUN_DIR" \( -name 'hpc_ckpt_*.ckpt' -o -name 'last*.ckpt' \) -prune -printf '%T@ %p\n' \
  | sort -n | tail -n 1 | cut -d' ' -f2-)
resume=()
if [ -n "$newest" ]; then
  resume=(--ckpt_path "$newest")
fi

export MASTER_PORT=${MASTER_PORT:-$((20000 + SLURM_JOB_ID % 20000))}
srun --kill-on-bad-exit=1 "$PYTHON" -m merv.cli fit \
  --config "$CONFIG" \
  --trainer.accelerator gpu \
  --trainer.devices "$SLURM_NTASKS_PER_NODE" \
  --trainer.num_nodes "$SLURM_NNODES" \
  --trainer.default_root_dir "$RUN_DIR" \
  --trainer.logger.init_args.version 0 \
  "${resume[@]}" "$@"
