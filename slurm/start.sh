#!/usr/bin/env bash
# Start a real, local Slurm cluster on this single machine, for testing dfm_hpc
# against real Slurm (sbatch/srun/sacct via submitit). CI runs this script.
#
# Run as root on Debian 12 (no systemd needed). It installs missing packages
# (slurm-wlm, slurmdbd, munge, mariadb-server, procps), then starts:
#   munged -> mariadbd -> slurmdbd -> slurmctld -> slurmd -N node1 ... node4
# Four fake nodes run on this host, with accounting
# via slurmdbd so that `sacct` works. Config goes to /etc/slurm/, state, spool
# and logs to $SLURM_SCRATCH (default /tmp/dfm_hpc-slurm).
#
# Like LUMI (slurm/README.md): each node has $SLURM_FAKE_GPUS (default 2) GPUs as
# a GRES (gres.conf, device files made for it under /dev/dfm_hpc-gpu), so
# --gpus-per-node gives every task of a node all of its GPUs in the environment
# Slurm sets (CUDA/ROCR_VISIBLE_DEVICES); and cluster=slurm runs each rank in
# slurm/sandbox.sh (bubblewrap), where Slurm's client commands do not exist, as
# in LUMI's containers. This script makes the sandbox's /usr/bin copy.
#
# Idempotent: old slurmctld/slurmd/slurmdbd (and any jobs) are killed and
# started fresh. Slurm state is wiped, job ids continue after the highest id in
# the accounting DB; munged and mariadbd are reused if healthy.
# Stop with slurm/stop.sh (--all also stops munged and mariadbd).
set -euo pipefail

SCRATCH=${SLURM_SCRATCH:-/tmp/dfm_hpc-slurm}
CLUSTER=${SLURM_CLUSTER_NAME:-dfm_hpc}
DB=slurm_acct_db
DB_USER=slurm
DB_PASS=slurm-local-test
CONF=/etc/slurm/slurm.conf
DBD_CONF=/etc/slurm/slurmdbd.conf
HOST=$(hostname -s)
LOG=$SCRATCH/log
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
T0=$SECONDS

die() { # die MESSAGE [LOGFILE...]: print MESSAGE and the tails of the logs
    local msg=$1 f; shift
    for f in "$@"; do
        [[ -s $f ]] && { echo "--- tail of $f ---"; tail -n 25 "$f"; } >&2
    done
    echo "start.sh: ERROR: $msg" >&2
    exit 1
}
WAIT_OUT=$LOG/last_check.out
wait_for() { # wait_for SECONDS COMMAND...: poll until COMMAND succeeds
    local deadline=$((SECONDS + $1)); shift
    until "$@" >"$WAIT_OUT" 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 0.5
    done
}
# Start a daemon fully detached, so that callers capturing our output don't hang.
detach() { setsid "$@" </dev/null >/dev/null 2>&1 & }

[[ $EUID -eq 0 ]] || die "must be run as root"

# --- packages -----------------------------------------------------------------
missing=()
for pair in slurmctld:slurm-wlm slurmd:slurm-wlm sacct:slurm-wlm slurmdbd:slurmdbd \
            munged:munge mariadbd:mariadb-server pgrep:procps bwrap:bubblewrap; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
if ((${#missing[@]})); then
    echo "Installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends slurm-wlm slurmdbd munge mariadb-server procps bubblewrap
fi

# --- stop old Slurm daemons (fresh start), prepare directories ----------------
bash "$HERE/stop.sh"
rm -rf "$SCRATCH/state" "$SCRATCH/slurmd"
mkdir -p "$SCRATCH/state" "$SCRATCH"/slurmd/node{1,2,3,4} "$LOG" /etc/slurm
grep -qE '^[^#]*\snode1(\s|$)' /etc/hosts || echo "127.0.0.1 node1 node2" >>/etc/hosts
grep -qE '^[^#]*\snode3(\s|$)' /etc/hosts || echo "127.0.0.1 node3" >>/etc/hosts
grep -qE '^[^#]*\snode4(\s|$)' /etc/hosts || echo "127.0.0.1 node4" >>/etc/hosts

# --- fake GPUs and the rank sandbox -------------------------------------------
# GPUs: character devices made for the purpose (1:3, /dev/null's numbers: harmless to open),
# GPUS per node; gres.conf names each node's own files, so the nodes' GPUs are distinct
GPUS=${SLURM_FAKE_GPUS:-2}
GPU_DIR=/dev/dfm_hpc-gpu
rm -rf "$GPU_DIR" && mkdir -p "$GPU_DIR"
: >/etc/slurm/gres.conf.new
for n in node1 node2; do
    for ((g = 0; g < GPUS; g++)); do mknod "$GPU_DIR/$n-gpu$g" c 1 3; done
    echo "NodeName=$n Name=gpu File=$GPU_DIR/$n-gpu[0-$((GPUS - 1))]" >>/etc/slurm/gres.conf.new
done
mv /etc/slurm/gres.conf.new /etc/slurm/gres.conf
# The sandbox's /usr/bin: hard links to the host's (same file system, instant), minus every
# Slurm client command (the slurm-client package's); /bin is a link to usr/bin on Debian 12
SANDBOX_BIN=/usr/lib/dfm_hpc-sandbox/bin
rm -rf "$SANDBOX_BIN.new" && mkdir -p "$(dirname "$SANDBOX_BIN")"
cp -al /usr/bin "$SANDBOX_BIN.new" 2>/dev/null || { rm -rf "$SANDBOX_BIN.new"; cp -a /usr/bin "$SANDBOX_BIN.new"; }
for f in $(dpkg -L slurm-client 2>/dev/null | grep '^/usr/bin/') scontrol sacct squeue sbatch scancel srun salloc sinfo; do
    rm -f "$SANDBOX_BIN.new/$(basename "$f")"
done
rm -rf "$SANDBOX_BIN" && mv "$SANDBOX_BIN.new" "$SANDBOX_BIN"
bwrap --dev-bind / / --ro-bind "$SANDBOX_BIN" /usr/bin -- bash -c '! command -v scontrol' \
    || die "the bubblewrap sandbox does not work here (user/mount namespaces?)"

# --- munge --------------------------------------------------------------------
munge_ok() { munge -n | unmunge; }
if [[ ! -s /etc/munge/munge.key ]]; then
    mkdir -p /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
if ! munge_ok >/dev/null 2>&1; then
    pids=$(pgrep -x munged || true); [[ -z $pids ]] || kill $pids 2>/dev/null || true
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    runuser -u munge -- /usr/sbin/munged --force || die "munged failed" /var/log/munge/munged.log
    wait_for 10 munge_ok || die "munge does not work" /var/log/munge/munged.log "$WAIT_OUT"
fi

# --- MariaDB ------------------------------------------------------------------
if ! mariadb-admin ping >/dev/null 2>&1; then
    pids=$(pgrep -x mariadbd || true); [[ -z $pids ]] || kill $pids 2>/dev/null || true
    [[ -d /var/lib/mysql/mysql ]] || mariadb-install-db --user=mysql >/dev/null
    mkdir -p /run/mysqld && chown mysql: /run/mysqld
    detach /usr/sbin/mariadbd --user=mysql --log-error="$LOG/mariadb.log"
    wait_for 60 mariadb-admin ping || die "MariaDB did not start" "$LOG/mariadb.log" "$WAIT_OUT"
fi
mariadb <<EOF
CREATE DATABASE IF NOT EXISTS $DB;
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON $DB.* TO '$DB_USER'@'localhost';
EOF

# --- slurm.conf (sacctmgr needs it too) ---------------------------------------
# Slurm state is wiped, so continue job ids after the highest one already in the
# accounting DB (otherwise sacct would mix up old and new jobs with the same id).
first_id=$(mariadb -N -e "SELECT COALESCE(MAX(id_job), 0) + 1 FROM \`${CLUSTER}_job_table\`" "$DB" 2>/dev/null || echo 1)

real_mem=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
node_mem=${SLURM_NODE_MEM_MB:-$((real_mem / 2))}
[[ -f $CONF ]] && ! grep -q 'dfm_hpc slurm/start.sh' "$CONF" && cp "$CONF" "$CONF.orig"
cat >"$CONF" <<EOF
# Written by dfm_hpc slurm/start.sh: a local 2-node test cluster on one host.
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$SCRATCH/state
SlurmdSpoolDir=$SCRATCH/slurmd/%n
SlurmctldPidFile=$SCRATCH/slurmctld.pid
SlurmdPidFile=$SCRATCH/slurmd-%n.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd-%n.log
FirstJobId=$first_id
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
GresTypes=gpu
AccountingStorageTRES=gres/gpu
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge=60
KillWait=5
# a requeued job waits cred_expire s before it may start again (default 120): 10 s keeps CI's requeue tests fast
AuthInfo=cred_expire=10
SlurmdTimeout=60
InactiveLimit=0
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
NodeName=node[1-2] NodeHostname=$HOST NodeAddr=127.0.0.1 Port=17001-17002 CPUs=2 RealMemory=$node_mem Gres=gpu:$GPUS State=UNKNOWN
# node3, node4: CPU nodes without GPUs, in their own partition (LUMI-C beside LUMI-G): stages that need no GPU go
# there, two nodes so that a 2-node CPU stage runs as it would on LUMI-C
NodeName=node[3-4] NodeHostname=$HOST NodeAddr=127.0.0.1 Port=17003-17004 CPUs=2 RealMemory=$node_mem State=UNKNOWN
PartitionName=debug Nodes=node[1-2] Default=YES MaxTime=INFINITE State=UP
PartitionName=cpu Nodes=node[3-4] MaxTime=INFINITE State=UP
EOF
chmod 644 "$CONF"

# --- slurmdbd -----------------------------------------------------------------
cat >"$DBD_CONF" <<EOF
# Written by dfm_hpc slurm/start.sh
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
LogFile=$LOG/slurmdbd.log
PidFile=$SCRATCH/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageLoc=$DB
StorageUser=$DB_USER
StoragePass=$DB_PASS
EOF
chown root:root "$DBD_CONF" && chmod 600 "$DBD_CONF"
slurmdbd || die "slurmdbd failed to start" "$LOG/slurmdbd.log"
wait_for 30 sacctmgr -n show cluster || die "slurmdbd not answering" "$LOG/slurmdbd.log" "$WAIT_OUT"
sacctmgr -n -P show cluster format=Cluster | grep -qx "$CLUSTER" \
    || sacctmgr -i add cluster "$CLUSTER" >/dev/null || die "sacctmgr add cluster failed"

# --- slurmctld, slurmd --------------------------------------------------------
slurmctld || die "slurmctld failed to start" "$LOG/slurmctld.log"
wait_for 30 scontrol ping || die "slurmctld not answering" "$LOG/slurmctld.log" "$WAIT_OUT"
for n in node1 node2 node3 node4; do
    slurmd -N "$n" || die "slurmd -N $n failed to start" "$LOG/slurmd-$n.log"
done
nodes_idle() { [[ $(sinfo -h -N -t idle -o %N | sort -u | wc -l) -eq 4 ]]; }
wait_for 60 nodes_idle || { sinfo -N -o '%N %T %E' >&2
    die "nodes not idle after 60 s (see also $LOG/slurmd-node*.log)" "$LOG/slurmctld.log"; }
wait_for 30 sacctmgr -n show cluster "$CLUSTER" || die "sacctmgr does not work" "$LOG/slurmdbd.log" "$WAIT_OUT"

gpu_env() { local out; out=$(srun -N2 --ntasks-per-node=1 --gpus-per-node="$GPUS" -t 1 printenv CUDA_VISIBLE_DEVICES) \
    && [[ $out == *0* ]]; }
wait_for 30 gpu_env || die "a job step cannot get the fake GPUs" "$LOG/slurmctld.log" "$WAIT_OUT"
echo "Slurm cluster '$CLUSTER' is up ($((SECONDS - T0)) s). Config $CONF, logs in $LOG."
sinfo -N
