#!/usr/bin/env bash
# Stop the test cluster started by launchers/slurm_up.sh: cancel all jobs, then stop only the
# daemons that script started, in the order that leaves no node drained (slurmd, slurmctld,
# slurmdbd, mariadbd, munged), then the emulated nodes' namespaces and bridge. Other holders
# still alive keep it running unless --force.
#
#   launchers/slurm_down.sh [--nodes N] [--force]     # --nodes N>1: the N-node cluster
set -euo pipefail
FORCE=0 NODES=1
while [ $# -gt 0 ]; do
  case "$1" in
    --force) FORCE=1; shift ;;
    --nodes) NODES=$2; shift 2 ;;
    *) echo "slurm_down: unknown option $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
if [ "$NODES" = 1 ]; then STATE=${PINCHPOINT_SLURM_STATE:-/tmp/pinchpoint-slurm}
else STATE=${PINCHPOINT_SLURM_STATE:-/tmp/pinchpoint-cluster}; fi
HOLDER=${PINCHPOINT_SLURM_HOLDER:-$PPID}
export SLURM_CONF=$STATE/slurm.conf
log() { echo "slurm_down: $*" >&2; }
[ -d "$STATE/started" ] || { log "nothing started by slurm_up.sh in $STATE"; exit 0; }
if [ -z "${PINCHPOINT_SLURM_LOCKED:-}" ]; then exec 9>"$STATE.lock"; flock 9; fi

running() { [ -n "$1" ] && [ -e "/proc/$1" ] && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null; }

# --- holders: drop this one and the dead; stop only when none is left ----------------------------
if [ -f "$STATE/holders" ]; then
  left=$(grep -vx -- "$HOLDER" "$STATE/holders" | while read -r p; do
         running "$p" && echo "$p"; done || true)
  printf '%s' "${left:+$left$'\n'}" >"$STATE/holders"
  if [ -n "$left" ] && [ $FORCE = 0 ]; then
    log "still used by pid(s) $(echo $left) (--force stops it anyway)"; exit 0
  fi
fi

# --- jobs first: killing slurmctld while a step cleans up leaves the node drained ---------------
if [ -f "$STATE/started/slurmctld" ] && scontrol ping 2>/dev/null | grep -q UP; then
  scancel --full --quiet --state=PENDING,RUNNING,SUSPENDED,REQUEUED $(squeue -h -o %A) 2>/dev/null || true
  until=$((SECONDS + 30))
  while [ -n "$(squeue -h -o %A 2>/dev/null)" ] && [ $SECONDS -lt $until ]; do sleep 0.5; done
  [ -z "$(squeue -h -o %A 2>/dev/null)" ] || log "jobs still listed after 30 s: $(squeue -h -o %A | xargs)"
fi

stop() {  # stop NAME: TERM the pid(s) recorded for a daemon we started, wait until gone
  local rec=$STATE/started/$1 pidfile pid
  [ -f "$rec" ] || return 0
  while read -r pidfile; do
    pid=$(cat "$pidfile" 2>/dev/null || true)
    running "$pid" || continue
    kill "$pid" 2>/dev/null || true
    local until=$((SECONDS + 20))
    while running "$pid" && [ $SECONDS -lt $until ]; do sleep 0.1; done
    running "$pid" && { log "$1 ($pid) ignored TERM; killing"; kill -9 "$pid" 2>/dev/null || true; }
  done <"$rec"
  rm -f "$rec"
}
for daemon in slurmds slurmctld slurmdbd mariadbd munged; do stop "$daemon"; done
if [ -f "$STATE/started/netns" ] || [ -f "$STATE/started/bridge" ]; then
  . "$(dirname "$0")/slurm/nodes.sh"; nodes_down
fi
if [ -f "$STATE/started/etc_link" ]; then
  [ "$(readlink /etc/slurm/slurm.conf 2>/dev/null)" = "$STATE/slurm.conf" ] && rm -f /etc/slurm/slurm.conf
  rm -f "$STATE/started/etc_link"
fi
rmdir "$STATE/started" 2>/dev/null || true
log "stopped (logs kept in $STATE/log)"
