# Emulated compute nodes for launchers/slurm_up.sh --nodes N (sourced, not run). Each node is a
# network + UTS + mount namespace with its own hostname and address: its eth0 (a veth) sits on a
# bridge in the root namespace, where slurmctld listens; intra-node traffic stays on the node's
# own loopback, inter-node traffic crosses its eth0, which is what `tc` shapes
# (src/pinchpoint/cluster/fabric.py). Pitfalls met building it: `ip netns exec` remounts /sys,
# hiding the cgroup mounts slurmd looks for (launchers/slurm_up.sh writes a cgroup.conf for that);
# the hosts file naming the nodes is bind-mounted inside each node, the machine's own is untouched;
# one munged serves every node (a unix socket with a path works across network namespaces).
#
# Names: bridge ppbr0 at $NET.1/24, node I = namespace pp-nodeI, hostname nodeI, $NET.(10+I).
NET=${PINCHPOINT_CLUSTER_NET:-10.77.0}
BRIDGE=ppbr0
HEAD_ADDR=$NET.1

node_ns() { echo "pp-node$1"; }
node_addr() { echo "$NET.$((10 + $1))"; }

nodes_net_up() {  # nodes_net_up N: bridge, one namespace + veth per node, the nodes' hosts file
  local n=$1 i ns
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
    ip addr add "$HEAD_ADDR/24" dev "$BRIDGE"
    touch "$STATE/started/bridge"
  fi
  ip link set "$BRIDGE" up
  {
    echo "127.0.0.1 localhost"
    echo "$HEAD_ADDR $(hostname -s) head"
    for i in $(seq 1 "$n"); do echo "$(node_addr "$i") node$i"; done
  } >"$STATE/hosts"
  for i in $(seq 1 "$n"); do
    ns=$(node_ns "$i")
    ip netns add "$ns"; echo "$ns" >>"$STATE/started/netns"
    ip link add "ppveth$i" type veth peer name eth0 netns "$ns"
    ip link set "ppveth$i" master "$BRIDGE" up
    ip -n "$ns" link set lo up
    ip -n "$ns" addr add "$(node_addr "$i")/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" route add default via "$HEAD_ADDR"
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 || true
  done
}

nodes_slurmd_start() {  # nodes_slurmd_start I: node I's slurmd, inside its namespace
  ip netns exec "$(node_ns "$1")" unshare --uts --mount --propagation private \
    sh -c "mount --bind '$STATE/hosts' /etc/hosts && hostname node$1 && \
           exec /usr/sbin/slurmd -N node$1 -f '$SLURM_CONF'" 9>&-
}

nodes_slurmd_up() {  # nodes_slurmd_up N: one slurmd per node
  local n=$1 i
  for i in $(seq 1 "$n"); do
    nodes_slurmd_start "$i"
    echo "$STATE/run/slurmd-node$i.pid" >>"$STATE/started/slurmds"
  done
}

nodes_down() {  # everything nodes_*_up recorded in $STATE/started, processes first
  local ns pid
  if [ -f "$STATE/started/netns" ]; then
    while read -r ns; do
      # A dead node's leftovers (job steps) die with it; then the namespace goes.
      for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
      ip netns del "$ns" 2>/dev/null || true
    done <"$STATE/started/netns"
    rm -f "$STATE/started/netns"
  fi
  if [ -f "$STATE/started/bridge" ]; then
    ip link del "$BRIDGE" 2>/dev/null || true
    rm -f "$STATE/started/bridge"
  fi
}
