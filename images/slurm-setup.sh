#!/usr/bin/env bash
# A one-node Slurm cluster on this machine (controller and compute node), plus Podman, for the
# cluster launcher tests (tests/cluster.rs) and for trying `agent-server launch slurm|podman`.
#
#   sudo images/slurm-setup.sh          # install (Debian/Ubuntu), configure, start, wait until idle
#   images/slurm-setup.sh --status      # sinfo/squeue, no changes
#
# Idempotent and fast when everything already runs (an `sinfo` check, nothing restarted).
# Configuration: /etc/slurm/slurm.conf (generated once; delete it to regenerate). The node
# declares at least 16 CPU slots (SlurmdParameters=config_overrides) and memory is not a
# consumable, so 8+ small jobs run at once even on a 2-core machine. No cgroups plugins are used
# (proctrack/linuxproc, task/none): it works in containers and VMs without a delegated cgroup
# tree. Environment: SLURM_SETUP_CPUS (default max(16, nproc)), SLURM_SETUP_TIMEOUT (s, 60).
set -euo pipefail

if [[ "${1:-}" == "--status" ]]; then
  sinfo; squeue; exit 0
fi
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  sed -n '2,13p' "$0"; exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "slurm-setup.sh: run as root (it installs packages and starts daemons)" >&2
  exit 1
fi

# One run at a time (CI and a helper may call it together).
exec 9>/run/agent-server-slurm-setup.lock
flock 9

TIMEOUT="${SLURM_SETUP_TIMEOUT:-60}"
node_ready() {
  local state
  state=$(timeout 5 sinfo -h -N -o '%t' 2>/dev/null | head -n1) || return 1
  [[ "$state" == idle* || "$state" == mix* || "$state" == alloc* ]]
}

have_all() {
  command -v sbatch >/dev/null && command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
    && command -v munged >/dev/null && command -v podman >/dev/null
}

if ! have_all; then
  echo "installing slurm-wlm munge podman"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurm-wlm munge podman >/dev/null
fi

# Podman in a VM/container without systemd: cgroupfs, file events; overlay storage where the
# kernel has it (else vfs, which copies the whole image per container). Written once; an
# administrator's own files are left alone.
mkdir -p /etc/containers
if [[ ! -s /etc/containers/containers.conf ]]; then
  cat >/etc/containers/containers.conf <<'EOF'
# written by agent-server images/slurm-setup.sh
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
[containers]
log_driver = "k8s-file"
EOF
fi
if [[ ! -s /etc/containers/storage.conf ]]; then
  driver=vfs
  if grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null; then driver=overlay; fi
  cat >/etc/containers/storage.conf <<EOF
# written by agent-server images/slurm-setup.sh
[storage]
driver = "$driver"
runroot = "/run/containers/storage"
graphroot = "/var/lib/containers/storage"
EOF
fi

if node_ready; then
  echo "slurm: already up"; sinfo
  exit 0
fi

HOST=$(hostname -s)
CPUS="${SLURM_SETUP_CPUS:-$(( $(nproc) > 16 ? $(nproc) : 16 ))}"
MEM_MB=$(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo)
CONF=/etc/slurm/slurm.conf
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
if [[ ! -s "$CONF" ]]; then
  cat >"$CONF" <<EOF
# One-node cluster written by agent-server images/slurm-setup.sh (delete to regenerate).
ClusterName=agentserver
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
# Quick turnover: short waits, cancelled jobs' processes killed promptly.
KillWait=5
MinJobAge=30
SchedulerParameters=sched_interval=1,batch_sched_delay=0
MessageTimeout=10
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
fi
# Debian's cgroup.conf is not needed (no cgroup plugins); an empty one silences a warning.
[[ -e /etc/slurm/cgroup.conf ]] || echo "CgroupPlugin=autodetect" >/etc/slurm/cgroup.conf

# munge
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
chmod 0755 /run/munge
if [[ ! -s /etc/munge/munge.key ]]; then
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
  chown munge:munge /etc/munge/munge.key
  chmod 0400 /etc/munge/munge.key
fi
if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
  runuser -u munge -- /usr/sbin/munged </dev/null >/dev/null 2>&1 9>&-
  for _ in $(seq 50); do
    munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && break
    sleep 0.1
  done
fi

# Daemons (they daemonize themselves): without this shell's output (a caller waiting for EOF
# would wait forever) and without the lock's descriptor (they would hold the lock).
if ! pgrep -x slurmctld >/dev/null; then
  /usr/sbin/slurmctld </dev/null >/dev/null 2>&1 9>&-
fi
if ! pgrep -x slurmd >/dev/null; then
  /usr/sbin/slurmd </dev/null >/dev/null 2>&1 9>&-
fi

deadline=$(( SECONDS + TIMEOUT ))
until node_ready; do
  state=$(timeout 5 sinfo -h -N -o '%t' 2>/dev/null | head -n1 || true)
  # A node left down/drained by an earlier run comes back.
  if [[ "$state" == down* || "$state" == drain* ]]; then
    scontrol update NodeName="$HOST" State=RESUME 2>/dev/null || true
  fi
  if (( SECONDS > deadline )); then
    echo "slurm-setup.sh: the node is not idle after ${TIMEOUT}s (state: ${state:-none})" >&2
    tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
    exit 1
  fi
  sleep 0.5
done
sinfo
