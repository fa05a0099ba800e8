#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, for the `slurm` tests and for trying the SLURM profile:
#
#   scripts/local-slurm.sh start    # install slurm-wlm + munge if missing, write the config, start the daemons
#   scripts/local-slurm.sh status   # which of our daemons run, and sinfo
#   scripts/local-slurm.sh env      # the line to paste into a shell: export SLURM_CONF=...
#   scripts/local-slurm.sh stop     # stop exactly the daemons `start` started (their PID files)
#
# Debian/Ubuntu (apt-get) and root only: slurmd must run as root. Besides what apt-get installs, it
# writes only the state folder ($ECGLM_SLURM_DIR, default /tmp/ecglm-slurm), munge's default socket
# folder /run/munge (sacctmgr and sshare only talk to the default socket) and /run/slurm/conf, the link
# through which a configless slurmd shares its copy of the config with the commands on this machine
# (removed again by `stop`). No service manager: munged, slurmctld and slurmd run as daemons with PID
# files ($ECGLM_SLURM_DIR/run, munged's in $ECGLM_SLURM_DIR/munge). A munged that already serves the
# default socket is used as it is and never stopped.
#
# Client commands (sbatch, squeue, scontrol) on this machine find the cluster through /run/slurm/conf,
# or through SLURM_CONF:  eval "$(scripts/local-slurm.sh env)". There is no accounting database, so
# `sacct` fails ("Slurm accounting storage is disabled"): follow jobs with `squeue --states=all` (it
# remembers finished jobs for MinJobAge) or in $ECGLM_SLURM_DIR/log/jobcomp.log (one line per job).
#
# Settings (environment):
#   ECGLM_SLURM_DIR        state folder (config, logs, spool, PID files); default /tmp/ecglm-slurm
#   ECGLM_SLURM_PORT       slurmctld's port (slurmd uses PORT+1); default 6817
#   ECGLM_SLURM_FAKE_GPUS  declare N fake GPUs on the node (gres.conf File=/dev/null) to exercise the GPU
#                          request path on a machine without GPUs; default 0 (a GPU job is then refused at
#                          submission: "Invalid generic resource (gres) specification")
#   ECGLM_SLURM_MIN_JOB_AGE  seconds slurmctld keeps finished jobs (squeue --states=all shows them, the
#                          profile's `slurm-status-command: squeue` needs >= 3x the first status wait);
#                          default 7200
#
# Exit codes: 0 done; 1 failed (daemon did not start: see the log it names); 3 cannot run here (not root,
# no apt-get, the packages cannot be installed): the tests skip with that message.
set -euo pipefail

STATE=${ECGLM_SLURM_DIR:-/tmp/ecglm-slurm}
PORT=${ECGLM_SLURM_PORT:-6817}
FAKE_GPUS=${ECGLM_SLURM_FAKE_GPUS:-0}
MIN_JOB_AGE=${ECGLM_SLURM_MIN_JOB_AGE:-7200}
CONF=$STATE/etc/slurm.conf
RUN=$STATE/run
LOGDIR=$STATE/log
MUNGE_DIR=$STATE/munge   # munged's PID, log and seed files (munged insists on owning their folder)
MUNGE_SOCKET_DIR=/run/munge
MUNGE_KEY=/etc/munge/munge.key
PARTITION=debug

say() { echo "local-slurm: $*" >&2; }
cannot() { say "cannot run here: $*"; exit 3; }
fail() { say "error: $*"; exit 1; }

# read_pid FILE: the PID in FILE (empty when there is none).
read_pid() { { tr -dc '0-9' <"$1"; } 2>/dev/null || true; }

# is_prog PID NAME: PID runs and is the program NAME (not a reused PID).
is_prog() { [ -n "$1" ] && [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ]; }

# pid_alive FILE NAME: the PID in FILE runs and is the program NAME.
pid_alive() { is_prog "$(read_pid "$1")" "$2"; }

install_packages() {
  local missing=()
  for cmd in slurmctld slurmd sbatch squeue scontrol munged; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || cannot "${missing[*]} missing and not root (apt-get install slurm-wlm munge needs root)"
  command -v apt-get >/dev/null 2>&1 || cannot "${missing[*]} missing and no apt-get (install slurm-wlm and munge)"
  say "installing slurm-wlm and munge (missing: ${missing[*]})"
  local apt=(env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge)
  if ! "${apt[@]}" >"$STATE/apt.log" 2>&1; then
    apt-get update -qq >>"$STATE/apt.log" 2>&1 || true
    "${apt[@]}" >>"$STATE/apt.log" 2>&1 || cannot "apt-get install slurm-wlm munge failed (see $STATE/apt.log)"
  fi
}

start_munge() {
  if [ -S "$MUNGE_SOCKET_DIR/munge.socket.2" ] && munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
    say "munged already serves $MUNGE_SOCKET_DIR/munge.socket.2: using it"
    return 0
  fi
  if [ ! -s "$MUNGE_KEY" ]; then
    install -d -o munge -g munge -m 0700 "$(dirname "$MUNGE_KEY")"
    if command -v mungekey >/dev/null 2>&1; then mungekey --create --keyfile "$MUNGE_KEY"; else
      dd if=/dev/urandom bs=1 count=1024 of="$MUNGE_KEY" status=none; fi
    chown munge:munge "$MUNGE_KEY"; chmod 0400 "$MUNGE_KEY"
  fi
  install -d -o munge -g munge -m 0755 "$MUNGE_SOCKET_DIR"
  rm -f "$MUNGE_SOCKET_DIR/munge.socket.2"
  runuser -u munge -- munged --pid-file "$MUNGE_DIR/munged.pid" --log-file "$MUNGE_DIR/munged.log" \
    --seed-file "$MUNGE_DIR/munged.seed" || fail "munged did not start (see $MUNGE_DIR/munged.log)"
  for _ in $(seq 50); do
    munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  fail "munged does not answer on $MUNGE_SOCKET_DIR/munge.socket.2 (see $MUNGE_DIR/munged.log)"
}

write_config() {
  local node host gres_node="" gres_types=""
  host=$(hostname -s)
  # e.g. NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=24105
  node=$(slurmd -C | head -n 1)
  case "$node" in NodeName=*) ;; *) fail "slurmd -C printed no node line: $node" ;; esac
  mkdir -p "$STATE/etc"
  if [ "$FAKE_GPUS" -gt 0 ]; then
    gres_types="GresTypes=gpu"
    gres_node="Gres=gpu:$FAKE_GPUS"
    # File= is required (without it the node is drained); /dev/null stands in for /dev/nvidiaN.
    : >"$STATE/etc/gres.conf"
    for i in $(seq 0 $((FAKE_GPUS - 1))); do
      echo "NodeName=$host Name=gpu Count=1 File=/dev/null" >>"$STATE/etc/gres.conf"
    done
  else
    rm -f "$STATE/etc/gres.conf"
  fi
  cat >"$CONF" <<EOF
# Written by scripts/local-slurm.sh: a one-node cluster on $host for the ECG-LM tests.
ClusterName=ecglm
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOGDIR/slurmctld.log
SlurmdLogFile=$LOGDIR/slurmd.log
# No cgroups without systemd: plain process tracking, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SchedulerType=sched/backfill
MpiDefault=none
# A job without --mem gets this much per CPU (not the whole node).
DefMemPerCPU=1024
ReturnToService=2
SlurmctldParameters=enable_configless
# No slurmdbd: finished jobs live in slurmctld for MinJobAge seconds, where squeue --states=all (the
# profile's status command) sees them; every finished job is also appended to the job completion log.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$LOGDIR/jobcomp.log
MinJobAge=$MIN_JOB_AGE
$gres_types
$node $gres_node NodeHostname=$host NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

wait_node_idle() {
  local state=""
  for _ in $(seq 100); do
    state=$(SLURM_CONF=$CONF sinfo -h -N -o %T 2>/dev/null | head -n 1 || true)
    case "$state" in idle | mixed | allocated) return 0 ;; esac
    sleep 0.3
  done
  fail "the node did not come up (state '${state:-none}'; see $LOGDIR/slurmctld.log and $LOGDIR/slurmd.log)"
}

cmd_start() {
  if pid_alive "$RUN/slurmctld.pid" slurmctld && pid_alive "$RUN/slurmd.pid" slurmd; then
    say "already running (state $STATE)"
    echo "export SLURM_CONF=$CONF"
    return 0
  fi
  [ "$(id -u)" = 0 ] || cannot "needs root (slurmd runs jobs as their user)"
  mkdir -p "$STATE"
  local t0=$SECONDS
  install_packages
  cmd_stop >/dev/null 2>&1 || true # leftovers of a half-started cluster
  install -d -m 0755 "$RUN" "$STATE/spool"
  install -d -o slurm -g slurm -m 0755 "$LOGDIR" "$STATE/ctld"
  install -d -o munge -g munge -m 0700 "$MUNGE_DIR"
  start_munge
  write_config
  # -c: a fresh controller state (no jobs of an earlier cluster in this folder)
  slurmctld -c -f "$CONF" || fail "slurmctld did not start (see $LOGDIR/slurmctld.log)"
  # Configless slurmd: it fetches the config from slurmctld and caches it in /run/slurm/conf, where the
  # client commands inside a job find it (the slurm-jobstep plugin drops SLURM_CONF from a job's srun).
  slurmd --conf-server "127.0.0.1:$PORT" || fail "slurmd did not start (see $LOGDIR/slurmd.log)"
  wait_node_idle
  say "started in $((SECONDS - t0)) s: $(SLURM_CONF=$CONF sinfo -h -N -o '%N %T cpus=%c mem=%m gres=%G')"
  echo "export SLURM_CONF=$CONF"
}

# stop_pid FILE NAME: TERM the daemon of FILE (if it is NAME), then KILL it after 10 s.
stop_pid() {
  local file=$1 name=$2 pid
  pid=$(read_pid "$file")
  if ! is_prog "$pid" "$name"; then
    rm -f "$file"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do
    is_prog "$pid" "$name" || break
    sleep 0.1
  done
  if is_prog "$pid" "$name"; then
    say "$name ($pid) ignored SIGTERM: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$file"
  say "stopped $name ($pid)"
}

cmd_stop() {
  stop_pid "$RUN/slurmd.pid" slurmd
  stop_pid "$RUN/slurmctld.pid" slurmctld
  stop_pid "$MUNGE_DIR/munged.pid" munged
  # slurmd's link to its config cache: client commands would find our stopped cluster through it
  case "$(readlink /run/slurm/conf 2>/dev/null)" in "$STATE"/*) rm -f /run/slurm/conf ;; esac
}

cmd_status() {
  local rc=0 name file
  for name in munged slurmctld slurmd; do
    file=$RUN/$name.pid
    [ "$name" = munged ] && file=$MUNGE_DIR/munged.pid
    if pid_alive "$file" "$name"; then
      echo "$name: running (pid $(read_pid "$file"))"
    elif [ "$name" = munged ]; then
      echo "munged: not started by this script"
    else
      echo "$name: not running"; rc=1
    fi
  done
  if [ $rc = 0 ]; then
    SLURM_CONF=$CONF sinfo -N -o '%N %P %T cpus=%c mem=%m gres=%G'
    echo "export SLURM_CONF=$CONF"
  fi
  return $rc
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  env) echo "export SLURM_CONF=$CONF" ;;
  *) echo "usage: $0 start|stop|status|env   (state in \$ECGLM_SLURM_DIR, default /tmp/ecglm-slurm)" >&2; exit 2 ;;
esac
