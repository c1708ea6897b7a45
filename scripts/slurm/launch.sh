#!/bin/bash
# Shared launcher for the sbatch scripts: picks the run dir, decides how to resume, and starts one
# process per GPU with srun. Extra arguments are passed to `merv.cli fit` (e.g. --trainer.strategy fsdp).
set -euo pipefail
: "${CONFIG:?set CONFIG to an experiment yaml}"
RUN_DIR=${RUN_DIR:-outputs/${SLURM_JOB_NAME}-${SLURM_JOB_ID}}
PYTHON=${PYTHON:-python}
mkdir -p "$RUN_DIR"

resume=()
# A requeued job finds Lightning's hpc checkpoint by itself; after a crash, resume from the last one.
if ! compgen -G "$RUN_DIR/hpc_ckpt_*.ckpt" >/dev/null && [ -n "$(find "$RUN_DIR" -name 'last*.ckpt' -print -quit)" ]; then
  resume=(--ckpt_path last)
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
