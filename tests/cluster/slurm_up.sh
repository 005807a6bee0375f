#!/usr/bin/env bash
# A single-node SLURM 22.05 cluster with accounting, on a fresh Debian 12 machine, as root, in seconds:
#   tests/cluster/slurm_up.sh      (make test-cluster runs it, the cluster tests, then slurm_down.sh)
# munge (authentication), MariaDB + slurmdbd (accounting: without `sacct`, submitit never notices a job
# killed before it wrote a result), slurmctld and slurmd on this host; no systemd, no cgroups. The daemons'
# PIDs go to $SLURM_STATE/pids, and slurm_down.sh stops exactly those.
set -euo pipefail

STATE=${SLURM_STATE:-/tmp/resnet_jax_slurm}
CLUSTER=resnetjax
PARTITION=${SLURM_PARTITION:-cpu}

if ! command -v slurmctld >/dev/null || ! command -v slurmdbd >/dev/null || ! command -v mariadbd >/dev/null; then
    echo "installing munge, SLURM and MariaDB (Debian packages)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq munge slurmctld slurmd slurm-client slurmdbd \
        mariadb-server >/dev/null
fi

HERE=$(cd "$(dirname "$0")" && pwd)
DAEMONS=5  # munged, mariadbd, slurmdbd, slurmctld, slurmd
if [[ -s "$STATE/pids" && $(wc -l <"$STATE/pids") -eq $DAEMONS ]] && xargs -r kill -0 <"$STATE/pids" 2>/dev/null; then
    echo "SLURM is already up (daemons: $(tr '\n' ' ' <"$STATE/pids"))"
    exit 0
fi
[[ -s "$STATE/pids" ]] && "$HERE/slurm_down.sh" >/dev/null  # a half-started or stale cluster of ours
rm -rf "$STATE"
mkdir -p "$STATE"/{spool/ctld,spool/d,log}
: >"$STATE/pids"
trap '"$HERE/slurm_down.sh" >/dev/null' ERR  # a failed start leaves none of its daemons behind

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...: poll until COMMAND succeeds
    local seconds=$1 what=$2
    shift 2
    for _ in $(seq $((seconds * 10))); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    echo "slurm_up: $what did not come up within ${seconds} s; logs in $STATE/log" >&2
    exit 1
}

record_pid() {  # record_pid PIDFILE: wait for a daemon's pid file and remember its PID
    wait_for 30 "$1" test -s "$1"
    cat "$1" >>"$STATE/pids"
}

# munge: the package made the key; munged runs as the munge user
[[ -s /etc/munge/munge.key ]] || mungekey --create --keyfile=/etc/munge/munge.key
chown munge:munge /etc/munge/munge.key
install -d -o munge -g munge -m 0755 /run/munge /var/log/munge /var/lib/munge
runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
record_pid /run/munge/munged.pid

# MariaDB in its own data directory (owned by the mysql user, as are its socket and log), for slurmdbd only
DB="$STATE/mysql"
install -d -o mysql -g mysql "$DB"
mariadb-install-db --user=mysql --datadir="$DB/data" >"$STATE/log/mariadb-install.log" 2>&1
/usr/sbin/mariadbd --user=mysql --datadir="$DB/data" --socket="$DB/mysqld.sock" --bind-address=127.0.0.1 \
    --port=3306 --pid-file="$DB/mariadb.pid" --log-error="$DB/mariadb.log" >/dev/null 2>&1 &
record_pid "$DB/mariadb.pid"
wait_for 30 MariaDB mariadb --socket="$DB/mysqld.sock" -e "select 1"
mariadb --socket="$DB/mysqld.sock" -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"

HOST=$(hostname -s)
NODE=$(slurmd -C | head -n 1)  # NodeName=<host> CPUs=... RealMemory=...
NODE_NAME=$(sed -E 's/^NodeName=([^ ]+).*/\1/' <<<"$NODE")
install -d /etc/slurm
cat >/etc/slurm/slurmdbd.conf <<CONF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=3306
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
PidFile=$STATE/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
CONF
chmod 600 /etc/slurm/slurmdbd.conf

cat >/etc/slurm/slurm.conf <<CONF
ClusterName=$CLUSTER
SlurmctldHost=$HOST
SlurmUser=root
AuthType=auth/munge
# a requeued job starts again once its credential expired: 30 s instead of the default 120
AuthInfo=cred_expire=30
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
ReturnToService=2
StateSaveLocation=$STATE/spool/ctld
SlurmdSpoolDir=$STATE/spool/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
InactiveLimit=0
KillWait=10
MinJobAge=300
$NODE State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE_NAME Default=YES MaxTime=INFINITE State=UP
CONF

slurmdbd
record_pid "$STATE/slurmdbd.pid"
wait_for 30 slurmdbd sacctmgr -n list cluster
sacctmgr -i add cluster "$CLUSTER" >/dev/null 2>&1 || true
slurmctld
record_pid "$STATE/slurmctld.pid"
slurmd
record_pid "$STATE/slurmd.pid"
wait_for 60 "the node" bash -c "sinfo -h -N -o %T | grep -qE '^(idle|mixed|allocated)'"
echo "SLURM is up: partition $PARTITION on $NODE_NAME ($(sinfo -h -o '%c CPUs, %m MB'))"
