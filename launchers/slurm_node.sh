#!/usr/bin/env bash
# Kill or revive one node of the emulated cluster (launchers/slurm_up.sh --nodes N), as a power
# failure would and as an operator brings it back:
#
#   launchers/slurm_node.sh kill node2     # link down first (no goodbye packets reach the peers),
#                                          # then every process on the node, slurmd included
#   launchers/slurm_node.sh revive node2   # link up, slurmd again, node resumed in Slurm
#
# Slurm notices the dead node after SlurmdTimeout (10 s here), sets it DOWN and requeues the jobs
# that ran on it; they resume from their newest checkpoint on the nodes they get.
# Env: PINCHPOINT_SLURM_STATE (the N-node cluster's state folder, default /tmp/pinchpoint-cluster).
set -euo pipefail
STATE=${PINCHPOINT_SLURM_STATE:-/tmp/pinchpoint-cluster}
export SLURM_CONF=$STATE/slurm.conf
. "$(dirname "$0")/slurm/nodes.sh"
usage() { echo "usage: $0 kill|revive nodeI (the N-node cluster in $STATE)" >&2; exit 2; }
[ $# = 2 ] || usage
ACTION=$1 NODE=$2
[[ "$NODE" =~ ^node([0-9]+)$ ]] || usage
I=${BASH_REMATCH[1]} NS=$(node_ns "${BASH_REMATCH[1]}")
grep -qx "$NS" "$STATE/started/netns" 2>/dev/null || { echo "$0: $NODE is not a node of the cluster in $STATE" >&2; exit 2; }
case "$ACTION" in
  kill)
    ip -n "$NS" link set eth0 down
    for pid in $(ip netns pids "$NS"); do kill -9 "$pid" 2>/dev/null || true; done
    echo "$0: $NODE is dead (link down, its processes killed)" >&2 ;;
  revive)
    ip -n "$NS" link set eth0 up
    pgrep -f "slurmd -N $NODE " >/dev/null || nodes_slurmd_start "$I"
    for _ in $(seq 50); do
      scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
      sinfo -h -n "$NODE" -o %t | grep -qE '^(idle|mix|alloc)' && break
      sleep 0.2
    done
    echo "$0: $NODE is back ($(sinfo -h -n "$NODE" -o %t))" >&2 ;;
  *) usage ;;
esac
