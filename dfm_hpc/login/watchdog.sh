# dfm_hpc: the hang watchdog and bad nodes, host side (dfm_hpc/login/watchdog.py renders the values,
# docs/lumi.md#hangs-and-bad-nodes says what it does). Set before this: DFM_HPC_HEARTBEATS, DFM_HPC_HUNG_MARKER,
# DFM_HPC_HANG_S, DFM_HPC_TICK_S, DFM_HPC_RESUMABLE, DFM_HPC_MAX_RESTARTS, DFM_HPC_STAGE.

dfm_hpc_watchdog() {  # in the background: ends the step when no rank has made progress for DFM_HPC_HANG_S
    local t0 now newest f last host state what frozen working waiting stale
    t0=$(date +%s)
    stale=$(( 3 * DFM_HPC_TICK_S + 2 ))  # a heartbeat file this old: its process no longer runs
    while sleep "$DFM_HPC_TICK_S" </dev/null >/dev/null 2>&1; do  # a left sleep holds no pipe of the job
        now=$(date +%s) newest=$t0 frozen="" working="" waiting=""
        for f in "$DFM_HPC_HEARTBEATS"/worker-*; do
            [ -f "$f" ] && read -r last host state what < "$f" || continue
            [ "$last" -gt "$newest" ] && newest=$last
            if [ $(( now - $(stat -c %Y "$f") )) -gt "$stale" ]; then frozen="$frozen $host"
            elif [ "$state" = waiting ]; then waiting="$waiting $host"
            else working="$working $host"; fi
        done
        [ $(( now - newest )) -lt "$DFM_HPC_HANG_S" ] && continue
        # the rank that hung: a frozen process, else one that works while the others wait for it
        local bad=$frozen
        [ -z "$bad" ] && [ -n "$waiting" ] && bad=$working
        bad=$(echo $bad | tr ' ' '\n' | sort -u | paste -sd, -)
        { echo "no progress for $(( now - newest )) s (limit ${DFM_HPC_HANG_S} s; frozen:${frozen:- none}," \
               "working:${working:- none}, waiting:${waiting:- none})"; echo "$bad"; } > "$DFM_HPC_HUNG_MARKER"
        echo "dfm_hpc watchdog: $(head -n 1 "$DFM_HPC_HUNG_MARKER"): ending the step" >&2
        squeue -h -s -j "${DFM_HPC_JOB:-$SLURM_JOB_ID}" -o %i | grep -E '\.[0-9]+$' | xargs -r scancel --signal=KILL
        return
    done
}

dfm_hpc_waiting_jobs() {  # this user's pending jobs that wait for this one, directly or through others
    local root=${SLURM_ARRAY_JOB_ID:-$SLURM_JOB_ID} list id dep d grown=1
    local ids=" $root "
    list=$(squeue -h --me -t PENDING -o '%i %E' 2>/dev/null) || return 0
    while [ "$grown" -eq 1 ]; do
        grown=0
        while read -r id dep; do
            id=${id%%_*}
            case "$ids" in *" $id "*) continue ;; esac
            for d in $(echo "$dep" | tr ',?' '  '); do
                d=${d#*:} && d=${d%%[_(]*}
                case "$ids" in *" $d "*) ids="$ids$id " && grown=1 && break ;; esac
            done
        done <<< "$list"
    done
    echo "${ids# $root }"
}

dfm_hpc_after_hang() {  # the step was ended by the watchdog: record the bad nodes, exclude them, requeue or fail
    local why bad sdir runs exclude id
    why=$(head -n 1 "$DFM_HPC_HUNG_MARKER") bad=$(sed -n 2p "$DFM_HPC_HUNG_MARKER")
    sdir=$(cat "$DFM_HPC_HEARTBEATS/stage_dir" 2>/dev/null)
    runs=${sdir:+$(dirname "$(dirname "$sdir")")/bad_nodes}  # textual: a rerun's stage dir is a link
    if [ -n "$bad" ] && [ -n "$runs" ]; then
        echo "$bad $(date +%Y-%m-%dT%H:%M:%S) $DFM_HPC_STAGE job $SLURM_JOB_ID: hung, $why" >> "$runs"
    fi
    exclude=$( { [ -n "$runs" ] && [ -f "$runs" ] && cut -d' ' -f1 "$runs"; echo "$bad"; } \
               | tr ',' '\n' | grep -v '^$' | sort -u | paste -sd, -)
    if [ -n "$exclude" ]; then
        for id in $(dfm_hpc_waiting_jobs); do
            scontrol update JobId="$id" ExcNodeList="$exclude" \
                && echo "dfm_hpc: waiting job $id now excludes $exclude" >&2
        done
    fi
    local fail=""
    [ "$DFM_HPC_RESUMABLE" = 1 ] || fail="$DFM_HPC_STAGE cannot resume, so it is not requeued"
    [ "${SLURM_RESTART_COUNT:-0}" -lt "$DFM_HPC_MAX_RESTARTS" ] \
        || fail="${fail:-restarted ${SLURM_RESTART_COUNT} times, the most cluster.max_restarts allows}"
    if [ -z "$fail" ]; then
        echo "dfm_hpc: $DFM_HPC_STAGE hung ($why): requeued${exclude:+ without $exclude}" >&2
        trap '' TERM  # the requeue ends this job; the script and its commands live on (KillWait) to exclude
        scontrol requeue "${DFM_HPC_JOB:-$SLURM_JOB_ID}" || fail="scontrol requeue failed (SBATCH_NO_REQUEUE?)"
        if [ -z "$fail" ]; then
            for _ in 1 2 3 4 5 6 7 8 9 10; do  # possible once the job is pending again
                [ -z "$exclude" ] || scontrol update JobId="${DFM_HPC_JOB:-$SLURM_JOB_ID}" ExcNodeList="$exclude" \
                    2>/dev/null && exit 0
                sleep 0.5
            done
            echo "dfm_hpc: the requeued job could not be set to exclude $exclude" >&2
            exit 0
        fi
    fi
    [ -n "$sdir" ] && printf 'host side (the hang watchdog)\n%s hung: %s; %s; `python -m dfm_hpc rerun RUN_DIR` continues it%s\n' \
        "$DFM_HPC_STAGE" "$why" "$fail" "${bad:+ without $bad}" > "$sdir/FAILED"
    echo "dfm_hpc: $DFM_HPC_STAGE hung ($why); $fail: the job fails" >&2
    exit 1
}
