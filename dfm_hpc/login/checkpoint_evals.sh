# dfm_hpc: the checkpoint evaluations, host side (dfm_hpc/login/checkpoint_evals.py renders the values,
# docs/evaluation.md#checkpoint-evaluation says what it does). Set before this: DFM_HPC_CHECKPOINT_QUEUE,
# DFM_HPC_CHECKPOINT_SCRIPT, DFM_HPC_CHECKPOINT_TICK_S.

dfm_hpc_queue_checkpoint_evals() {  # one pass: each checkpoint rank 0 put in the queue gets its own evaluate job
    local req run stage step dir id
    for req in "$DFM_HPC_CHECKPOINT_QUEUE"/step-*; do
        [ -f "$req" ] || continue
        { read -r run && read -r stage && read -r step; } < "$req" || continue  # written whole (renamed into place)
        dir="$run/stages/$stage/checkpoint_evals"
        # a job of its own, not a step of this one: this job's SLURM_* values must not shape it (SLURM_CONF stays)
        id=$( (unset $(compgen -e | grep '^SLURM_' | grep -vx SLURM_CONF)
               sbatch --parsable --output="$dir/logs/step-$step.sbatch.log" --error="$dir/logs/step-$step.sbatch.log" \
                   "$DFM_HPC_CHECKPOINT_SCRIPT" \
                   "$run" "$stage" "$step") ) \
            || { echo "dfm_hpc: sbatch of the step-$step evaluation failed" >&2; continue; }
        echo "${id%%;*}" > "$dir/step-$step.job_id"
        rm -f "$req"
        echo "dfm_hpc: checkpoint of step $step: evaluation queued as job ${id%%;*}" >&2
    done
}

dfm_hpc_checkpoint_evals() {  # in the background, beside the step: training never waits for a queued job
    while sleep "$DFM_HPC_CHECKPOINT_TICK_S" </dev/null >/dev/null 2>&1; do  # a left sleep holds no pipe of the job
        dfm_hpc_queue_checkpoint_evals
    done
}
