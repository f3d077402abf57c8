#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, for testing the pipeline's SLURM profile.
#
#   scripts/slurm-cluster.sh start    install Debian's slurmctld/slurmd/slurm-client/munge if missing,
#                                     start munged (unless one already answers), slurmctld and slurmd,
#                                     wait until the node is idle and `srun -N1 hostname` answers
#   scripts/slurm-cluster.sh stop     stop the daemons this script started (by the pids they wrote)
#   scripts/slurm-cluster.sh status   say what is running; exit 0 only if the cluster answers
#
# Everything (slurm.conf, pid files, logs, state, spool) lives in a state directory, by default
# /tmp/hetsfl-slurm (override with HETSFL_SLURM_DIR). /etc/slurm/slurm.conf is never written: the
# daemons get our file with -f and clients find it through SLURM_CONF, so after `start` run
#   export SLURM_CONF=<state dir>/slurm.conf
# (the line is printed); /run/slurm/conf/slurm.conf is linked to it while the cluster runs (see
# RUN_CONF). Needs root (Debian's packages, munge key, SlurmUser=root). Slurm 22.05 has no accounting
# here (AccountingStorageType=accounting_storage/none): no sacct; use squeue for job states.
set -euo pipefail

STATE_DIR=${HETSFL_SLURM_DIR:-/tmp/hetsfl-slurm}
CONF=$STATE_DIR/slurm.conf
CTLD_PID=$STATE_DIR/slurmctld.pid
SLURMD_PID=$STATE_DIR/slurmd.pid
MUNGE_DIR=$STATE_DIR/munge            # owned by the munge user: munged's pid and log files
MUNGED_PID=$MUNGE_DIR/munged.pid      # exists only if this script started munged
CTLD_LOG=$STATE_DIR/slurmctld.log
SLURMD_LOG=$STATE_DIR/slurmd.log
MUNGED_LOG=$MUNGE_DIR/munged.log
MUNGE_KEY=/etc/munge/munge.key
# Where Slurm clients look when SLURM_CONF is unset and /etc/slurm/slurm.conf does not exist (the file a
# configless slurmd would cache). Snakemake's SLURM job-step executor removes every SLURM_* variable,
# SLURM_CONF included, before its srun inside a job, so that srun finds our file only through here.
RUN_CONF=/run/slurm/conf/slurm.conf
WAIT_SECONDS=${HETSFL_SLURM_WAIT:-60}
PACKAGES=(slurmctld slurmd slurm-client munge)

export SLURM_CONF=$CONF
case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH=$PATH:/usr/sbin:/sbin ;; esac

say() { echo "slurm-cluster: $*"; }
die() {
  echo "slurm-cluster: error: $*" >&2
  exit 1
}

# proc_running PID NAME: PID is a running (not zombie) process called NAME (guards against pid reuse;
# PID 1 here may reap exited daemons late).
proc_running() {
  local pid=$1 name=$2 stat
  [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/stat ]] || return 1
  stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
  [[ $stat == "$pid ($name) "* && $stat != "$pid ($name) Z"* ]]
}

# read_pid FILE: the pid in FILE, or nothing (a daemon removes its pid file when it exits).
read_pid() { cat "$1" 2>/dev/null || true; }

# pid_alive FILE NAME: the pid in FILE is a running process called NAME.
pid_alive() { proc_running "$(read_pid "$1")" "$2"; }

# foreign_pids NAME PIDFILE: pids of processes called NAME other than the one in PIDFILE.
foreign_pids() {
  local name=$1 file=$2 ours="" pid out=()
  pid_alive "$file" "$name" && ours=$(read_pid "$file")
  for pid in $(pgrep -x "$name" || true); do
    [[ $pid == "$ours" ]] || ! proc_running "$pid" "$name" || out+=("$pid")
  done
  echo "${out[*]:-}"
}

munge_works() { command -v munge >/dev/null 2>&1 && munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

installed() {
  local p
  for p in slurmctld slurmd sinfo srun squeue scontrol munged munge; do
    command -v "$p" >/dev/null 2>&1 || return 1
  done
}

install_packages() {
  installed && return 0
  [[ $(id -u) == 0 ]] || die "the Debian packages ${PACKAGES[*]} are missing and installing them needs root"
  command -v apt-get >/dev/null 2>&1 || die "the packages ${PACKAGES[*]} are missing and apt-get is not available"
  say "installing ${PACKAGES[*]} (apt-get update, then install)"
  # No init system here: keep the packages' maintainer scripts from starting daemons themselves.
  local made_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    made_policy=1
  fi
  local rc=0
  {
    apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
  } || rc=$?
  [[ $made_policy == 1 ]] && rm -f /usr/sbin/policy-rc.d
  [[ $rc == 0 ]] || die "apt-get failed (exit $rc) installing ${PACKAGES[*]}"
  installed || die "the packages were installed but the slurm/munge commands are still missing"
}

ensure_munge_key() {
  install -d -o munge -g munge -m 0700 /etc/munge
  if [[ ! -s $MUNGE_KEY ]]; then
    say "creating munge key $MUNGE_KEY"
    if command -v mungekey >/dev/null 2>&1; then
      mungekey --create --keyfile="$MUNGE_KEY"
    else
      dd if=/dev/urandom of="$MUNGE_KEY" bs=1 count=1024 status=none
    fi
  fi
  chown munge:munge "$MUNGE_KEY"
  chmod 0400 "$MUNGE_KEY"
}

start_munged() {
  if munge_works; then
    say "munged already answers; using it"
    return 0
  fi
  ensure_munge_key
  install -d -o munge -g munge -m 0755 /run/munge "$MUNGE_DIR"
  rm -f "$MUNGED_PID"
  say "starting munged"
  runuser -u munge -- munged --force --pid-file="$MUNGED_PID" --log-file="$MUNGED_LOG" 9>&- ||
    die "munged did not start (see $MUNGED_LOG)"
  local i
  for ((i = 0; i < 20; i++)); do
    munge_works && return 0
    sleep 0.5
  done
  return 1
}

write_conf() {
  local host cpus mem_mb real_mb
  host=$(hostname -s)
  cpus=$(nproc)
  mem_mb=$(($(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024))
  # A bit below the machine's memory: slurmd drains a node that has less than it is configured with.
  real_mb=$((mem_mb - (mem_mb / 20 > 512 ? mem_mb / 20 : 512)))
  mkdir -p "$STATE_DIR/state" "$STATE_DIR/spool"
  cat >"$CONF" <<EOF
# Written by scripts/slurm-cluster.sh for a single-node test cluster on $host; do not edit.
ClusterName=hetsfl
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MinJobAge=600
MailProg=/bin/true
StateSaveLocation=$STATE_DIR/state
SlurmdSpoolDir=$STATE_DIR/spool
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$CTLD_LOG
SlurmdLogFile=$SLURMD_LOG
SlurmctldDebug=info
SlurmdDebug=info
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
NodeName=$host CPUs=$cpus RealMemory=$real_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  say "wrote $CONF (node $host, CPUs=$cpus, RealMemory=${real_mb} MB, partition debug)"
}

# Link RUN_CONF to our slurm.conf for clients that run without SLURM_CONF (see RUN_CONF above).
link_client_conf() {
  if [[ -L $RUN_CONF && $(readlink "$RUN_CONF") == "$CONF" ]]; then
    :
  elif [[ -e $RUN_CONF || -L $RUN_CONF ]]; then
    say "warning: $RUN_CONF exists and is not ours; srun inside Snakemake's SLURM jobs may not find this cluster"
  else
    mkdir -p "$(dirname "$RUN_CONF")"
    ln -s "$CONF" "$RUN_CONF"
  fi
  if [[ -e /etc/slurm/slurm.conf ]]; then
    say "warning: /etc/slurm/slurm.conf exists (not ours, left alone): clients without SLURM_CONF, such as"
    say "         the srun inside Snakemake's SLURM jobs, will read it instead of $CONF"
  fi
}

unlink_client_conf() {
  if [[ -L $RUN_CONF && $(readlink "$RUN_CONF") == "$CONF" ]]; then
    rm -f "$RUN_CONF"
    rmdir "$(dirname "$RUN_CONF")" "$(dirname "$(dirname "$RUN_CONF")")" 2>/dev/null || true
  fi
}

node_state() { sinfo -h -N -n "$(hostname -s)" -o '%t' 2>/dev/null | head -n1; }

cluster_answers() {
  [[ $(node_state) =~ ^(idle|mix|alloc|comp) ]] || return 1
  timeout 20 srun -N1 -n1 -t 1 hostname >/dev/null 2>&1
}

show_logs() {
  local f
  for f in "$CTLD_LOG" "$SLURMD_LOG" "$MUNGED_LOG"; do
    [[ -f $f ]] || continue
    echo "----- last lines of $f -----" >&2
    tail -n 40 "$f" >&2
  done
}

print_export() {
  say "clients need:  export SLURM_CONF=$CONF"
  echo "export SLURM_CONF=$CONF"
}

# stop_pid FILE NAME: TERM the process in FILE, wait up to 15 s, then KILL; remove FILE.
stop_pid() {
  local file=$1 name=$2 pid i
  if pid_alive "$file" "$name"; then
    pid=$(read_pid "$file")
    say "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 30; i++)); do
      pid_alive "$file" "$name" || break
      sleep 0.5
    done
    if pid_alive "$file" "$name"; then
      say "$name (pid $pid) ignored TERM; killing it"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.5
    fi
  fi
  rm -f "$file"
}

do_stop() {
  local any=0 i
  pid_alive "$CTLD_PID" slurmctld && any=1
  pid_alive "$SLURMD_PID" slurmd && any=1
  pid_alive "$MUNGED_PID" munged && any=1
  if [[ $any == 0 ]]; then
    say "nothing of ours is running (state dir $STATE_DIR)"
    rm -f "$CTLD_PID" "$SLURMD_PID" "$MUNGED_PID"
    unlink_client_conf
    return 0
  fi
  # Cancel leftover jobs first so that no job steps outlive slurmd.
  if pid_alive "$CTLD_PID" slurmctld && pid_alive "$SLURMD_PID" slurmd; then
    if [[ -n $(squeue -h -o %i 2>/dev/null || true) ]]; then
      say "cancelling the jobs still queued or running"
      timeout 10 scancel --partition=debug 2>/dev/null || true
      for ((i = 0; i < 20; i++)); do
        [[ -z $(squeue -h -t running,completing,pending -o %i 2>/dev/null || true) ]] && break
        sleep 0.5
      done
    fi
  fi
  local pids=()
  pid_alive "$SLURMD_PID" slurmd && pids+=("$(read_pid "$SLURMD_PID")")
  pid_alive "$CTLD_PID" slurmctld && pids+=("$(read_pid "$CTLD_PID")")
  pid_alive "$MUNGED_PID" munged && pids+=("$(read_pid "$MUNGED_PID")")
  stop_pid "$SLURMD_PID" slurmd
  stop_pid "$CTLD_PID" slurmctld
  stop_pid "$MUNGED_PID" munged
  unlink_client_conf
  # The daemons forked away from us, so init reaps them; give it a moment so that they are gone from
  # the process table (a zombie left after that is dead all the same).
  local p gone
  for ((i = 0; i < 40; i++)); do
    gone=1
    for p in "${pids[@]}"; do [[ -e /proc/$p ]] && gone=0; done
    [[ $gone == 1 ]] && break
    sleep 0.25
  done
  local left=()
  for p in $(pgrep -x slurmstepd || true); do proc_running "$p" slurmstepd && left+=("$p"); done
  [[ ${#left[@]} == 0 ]] || say "warning: slurmstepd processes are still running: ${left[*]}"
  say "stopped"
}

do_status() {
  local ok=0
  if pid_alive "$CTLD_PID" slurmctld; then say "slurmctld running (pid $(read_pid "$CTLD_PID"))"; else
    say "slurmctld not running"
    ok=1
  fi
  if pid_alive "$SLURMD_PID" slurmd; then say "slurmd running (pid $(read_pid "$SLURMD_PID"))"; else
    say "slurmd not running"
    ok=1
  fi
  if pid_alive "$MUNGED_PID" munged; then
    say "munged running (pid $(read_pid "$MUNGED_PID"), started by this script)"
  elif munge_works; then
    say "munged answers (not started by this script)"
  else
    say "munged not running"
    ok=1
  fi
  if [[ $ok == 0 ]]; then
    sinfo 2>/dev/null || true
    if cluster_answers; then
      say "cluster answers (node $(node_state), srun works)"
      print_export
    else
      say "daemons are up but the cluster does not answer (node state '$(node_state)')"
      ok=1
    fi
  fi
  return $ok
}

# wait_pidfile FILE NAME: a daemon writes its pid file after it forks; give it up to 10 s.
wait_pidfile() {
  local file=$1 name=$2 i
  for ((i = 0; i < 40; i++)); do
    pid_alive "$file" "$name" && return 0
    sleep 0.25
  done
  die "$name did not write a live pid to $file within 10 s"
}

STARTING=0
on_exit() {
  local rc=$?
  if [[ $STARTING == 1 && $rc != 0 ]]; then
    echo "slurm-cluster: start failed; the daemons' logs follow, then everything started is stopped" >&2
    show_logs
    do_stop >&2 || true
  fi
  exit $rc
}
trap on_exit EXIT

do_start() {
  [[ $(id -u) == 0 ]] || die "start needs root (it installs packages, manages the munge key and runs SlurmUser=root)"
  install_packages
  mkdir -p "$STATE_DIR"

  if pid_alive "$CTLD_PID" slurmctld && pid_alive "$SLURMD_PID" slurmd && munge_works && cluster_answers; then
    say "already running (state dir $STATE_DIR)"
    link_client_conf
    print_export
    return 0
  fi
  # Half-running (one daemon died, or the node never came up): start over from a clean slate.
  if pid_alive "$CTLD_PID" slurmctld || pid_alive "$SLURMD_PID" slurmd; then
    say "found a half-started cluster; stopping it first"
    do_stop
  fi
  local other
  other=$(foreign_pids slurmctld "$CTLD_PID")
  [[ -z $other ]] || die "a slurmctld not started by this script is running (pid $other); stop it first"
  other=$(foreign_pids slurmd "$SLURMD_PID")
  [[ -z $other ]] || die "a slurmd not started by this script is running (pid $other); stop it first"

  STARTING=1
  start_munged || die "munged does not answer (munge -n | unmunge failed)"
  write_conf
  rm -f "$CTLD_PID" "$SLURMD_PID"
  local f
  for f in "$CTLD_LOG" "$SLURMD_LOG"; do [[ -f $f ]] && mv -f "$f" "$f.prev"; done
  say "starting slurmctld"
  slurmctld -f "$CONF" 9>&- || die "slurmctld exited with an error"
  wait_pidfile "$CTLD_PID" slurmctld
  say "starting slurmd"
  slurmd -f "$CONF" 9>&- || die "slurmd exited with an error"
  wait_pidfile "$SLURMD_PID" slurmd
  link_client_conf

  say "waiting up to ${WAIT_SECONDS}s for node $(hostname -s) to be idle and srun to answer"
  local deadline=$((SECONDS + WAIT_SECONDS)) resumed=0 state
  while ((SECONDS < deadline)); do
    pid_alive "$CTLD_PID" slurmctld || die "slurmctld died"
    pid_alive "$SLURMD_PID" slurmd || die "slurmd died"
    state=$(node_state)
    # A node left down/drained by an earlier run's saved state: put it back into service once.
    if [[ $resumed == 0 && $state =~ ^(down|drain) && ! $state =~ \*$ ]]; then
      scontrol update NodeName="$(hostname -s)" State=RESUME >/dev/null 2>&1 || true
      resumed=1
    fi
    if [[ $state == idle ]] && timeout 20 srun -N1 -n1 -t 1 hostname >/dev/null 2>&1; then
      STARTING=0
      say "cluster is up: node $(hostname -s) idle in partition debug, srun answers"
      print_export
      return 0
    fi
    sleep 1
  done
  die "the node was not idle with srun answering within ${WAIT_SECONDS}s (last state '$(node_state)')"
}

# start and stop take a lock, so that concurrent calls (parallel test workers) run one after another.
# The daemons are started with its descriptor 9 closed (9>&-), or they would hold it for ever.
lock_state_dir() {
  mkdir -p "$STATE_DIR"
  exec 9>"$STATE_DIR/.lock"
  flock -w 600 9 || die "could not lock $STATE_DIR/.lock within 600 s"
}

case ${1:-} in
start)
  lock_state_dir
  do_start
  ;;
stop)
  lock_state_dir
  do_stop
  ;;
status) do_status ;;
*)
  echo "usage: $0 {start|stop|status}   (state dir: \$HETSFL_SLURM_DIR, default /tmp/hetsfl-slurm)" >&2
  exit 2
  ;;
esac
