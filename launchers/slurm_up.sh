#!/usr/bin/env bash
# Start a real Slurm cluster on this machine (munge, MariaDB + slurmdbd for accounting,
# slurmctld, slurmd) and wait until its nodes are idle. Idempotent: installs what is missing,
# reuses a cluster it already started, and records which daemons it started so that
# launchers/slurm_down.sh stops only those. Why each setting: the comments in
# launchers/slurm/slurm.conf.in and launchers/slurm/nodes.sh, and below.
#
#   launchers/slurm_up.sh            # one node: this machine (then export SLURM_CONF=... as printed)
#   launchers/slurm_up.sh --nodes 3  # three nodes node1..node3, each a network + UTS namespace
#                                    # with its own address on a bridge (launchers/slurm/nodes.sh)
#
# The N-node cluster is a second, separate cluster (own state folder, ports, munged and
# accounting database), so both can run at once; its nodes carry the Slurm feature
# emulated_fabric: jobs may shape their links (fabric.gbps, src/pinchpoint/cluster/fabric.py).
# Env: PINCHPOINT_SLURM_STATE (state folder, default /tmp/pinchpoint-slurm, with --nodes N>1
#      /tmp/pinchpoint-cluster),
#      PINCHPOINT_SLURM_CPUS (CPUs each node offers; default max(nproc, 16) so that the tests' 8
#      simultaneous jobs plus a few more run at once on a laptop, oversubscribing its cores),
#      PINCHPOINT_SLURM_HOLDER (a pid that uses the cluster; slurm_down.sh stops it only when no
#      holder is alive; default: the caller).
# Exit status: 0 up, 3 cannot install or start here (not root, no apt), 1 anything else.
set -euo pipefail
NODES=1
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) NODES=$2; shift 2 ;;
    *) echo "slurm_up: unknown option $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
[[ "$NODES" =~ ^[1-9][0-9]?$ ]] || { echo "slurm_up: --nodes must be 1-99, not '$NODES'" >&2; exit 2; }
if [ "$NODES" = 1 ]; then   # this machine is the node
  STATE=${PINCHPOINT_SLURM_STATE:-/tmp/pinchpoint-slurm}
  CLUSTER=pinchpoint PORTS=(6817 6818 6819) DB_PORT=${PINCHPOINT_SLURM_DB_PORT:-3307}
  NODE_NAMES=($(hostname -s))
else                        # node1..nodeN in namespaces
  STATE=${PINCHPOINT_SLURM_STATE:-/tmp/pinchpoint-cluster}
  CLUSTER=pinchpoint_nodes PORTS=(6917 6918 6920) DB_PORT=${PINCHPOINT_SLURM_DB_PORT:-3308}
  NODE_NAMES=($(seq -f 'node%g' 1 "$NODES"))
  . "$(dirname "$0")/slurm/nodes.sh"
fi
HOLDER=${PINCHPOINT_SLURM_HOLDER:-$PPID}
export SLURM_CONF=$STATE/slurm.conf

log() { echo "slurm_up: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
cannot() { log "CANNOT START: $*"; exit 3; }
mkdir -p "$(dirname "$STATE")"
# One up/down at a time (other sessions share this machine). Daemons get `9>&-` so that they do
# not inherit the lock.
exec 9>"$STATE.lock"; flock 9

alive() {  # a pid file whose process runs (a zombie counts as gone: init here reaps slowly)
  local p; p=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$p" ] && [ -e "/proc/$p" ] && ! grep -q '^State:.*Z' "/proc/$p/status" 2>/dev/null
}
# The nodes' states, one per line; "idle" when every node is idle.
node_states() { sinfo -h -N -o %t 2>/dev/null | sort -u; }
slurmds_alive() { local n; for n in "${NODE_NAMES[@]}"; do alive "$STATE/run/slurmd-$n.pid" || return 1; done; }
wait_for() {  # wait_for SECONDS WHAT COMMAND...
  local until=$((SECONDS + $1)) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $until ] || die "$what did not come up; logs in $STATE/log"; sleep 0.2
  done
}
hold() { echo "$HOLDER" >>"$STATE/holders"; echo "export SLURM_CONF=$SLURM_CONF"; }

# --- already running (started by an earlier call): just register this holder ------------------
# (A node killed on purpose, launchers/slurm_node.sh, is the cluster's business, not a reason to
# restart it: the controller and the node list decide.)
if alive "$STATE/run/slurmctld.pid" && [ "$(sinfo -h -N -o %N 2>/dev/null | wc -l)" = "$NODES" ] &&
   { [ "$NODES" != 1 ] || slurmds_alive; }; then
  log "cluster already up ($STATE)"; hold; exit 0
fi

# A failed start stops whatever it had started (lock already held: tell slurm_down.sh).
trap '[ $? = 0 ] || PINCHPOINT_SLURM_LOCKED=1 "$(dirname "$0")/slurm_down.sh" --nodes "$NODES" --force >&2' EXIT

# --- install (Debian packages) -----------------------------------------------------------------
PKGS=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server mariadb-client)
missing=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || cannot "need root to install ${missing[*]}"
  command -v apt-get >/dev/null || cannot "no apt-get to install ${missing[*]} (not Debian/Ubuntu)"
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 ||
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; } ||
    cannot "apt-get could not install ${missing[*]} (offline?)"
fi
[ "$(id -u)" = 0 ] || cannot "run as root (the daemons run as root/munge/mysql on this test cluster)"

# --- fresh state folder and configuration --------------------------------------------------------
# Job ids restart at 1 in a fresh state folder: callers must use fresh submitit folders.
if [ -d "$STATE/started" ]; then   # a half-up cluster from an earlier call: stop its daemons
  PINCHPOINT_SLURM_LOCKED=1 "$(dirname "$0")/slurm_down.sh" --nodes "$NODES" --force >&2
fi
rm -rf "$STATE"; mkdir -p "$STATE"/{run,log,ctld,spool,started}
: >"$STATE/plugstack.conf"
CPUS=${PINCHPOINT_SLURM_CPUS:-$(( $(nproc) > 16 ? $(nproc) : 16 ))}
MEM_MB=$(awk '/MemAvailable/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
if [ "$NODES" = 1 ]; then
  HEAD=$(hostname -s) HEAD_IP=127.0.0.1 AUTH_INFO=cred_expire=10 FEATURE=
  MUNGE_SOCKET=/run/munge/munge.socket.2
  NODE_LINES="NodeName=$HEAD NodeAddr=127.0.0.1"
else   # own munged (its socket path works across namespaces): the one-node cluster keeps its own
  HEAD="$(hostname -s)" HEAD_IP=$HEAD_ADDR FEATURE=" Feature=emulated_fabric"
  MUNGE_SOCKET=$STATE/run/munge.sock AUTH_INFO="socket=$STATE/run/munge.sock,cred_expire=10"
  NODE_LINES=$(for i in $(seq 1 "$NODES"); do echo "NodeName=node$i NodeAddr=$(node_addr "$i")"; done)
fi
NODE_LINES=$(echo "$NODE_LINES" | sed "s/\$/ CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN$FEATURE/")
sed -e "s|@STATE@|$STATE|g" -e "s|@CLUSTER@|$CLUSTER|g" -e "s|@HEAD@|$HEAD|g" \
    -e "s|@HEAD_IP@|$HEAD_IP|g" -e "s|@AUTH_INFO@|$AUTH_INFO|g" -e "s|@CTLD_PORT@|${PORTS[0]}|g" \
    -e "s|@SLURMD_PORT@|${PORTS[1]}|g" -e "s|@DBD_PORT@|${PORTS[2]}|g" \
    -e "s|@MUNGE_SOCKET@|$MUNGE_SOCKET|g" -e "s|@NODE_LIST@|$(IFS=,; echo "${NODE_NAMES[*]}")|g" \
    "$(dirname "$0")/slurm/slurm.conf.in" | awk -v lines="$NODE_LINES" '$0 == "@NODE_LINES@" {print lines; next} {print}' \
    >"$STATE/slurm.conf"
# ip netns exec remounts /sys, hiding the cgroup mounts slurmd's default plugin looks for; the
# cluster uses none of them (proctrack/linuxproc, task/none): cgroup/v1 only satisfies its check.
[ "$NODES" = 1 ] || echo "CgroupPlugin=cgroup/v1" >"$STATE/cgroup.conf"
DB_PASS=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
sed -e "s|@STATE@|$STATE|g" -e "s|@DB_PORT@|$DB_PORT|g" -e "s|@DB_PASS@|$DB_PASS|g" \
    -e "s|@AUTH_INFO@|$AUTH_INFO|g" -e "s|@DBD_PORT@|${PORTS[2]}|g" \
    "$(dirname "$0")/slurm/slurmdbd.conf.in" >"$STATE/slurmdbd.conf"
chmod 600 "$STATE/slurmdbd.conf"   # slurmdbd refuses a readable file (it holds the DB password)
# Client tools without SLURM_CONF read /etc/slurm/slurm.conf: link it unless a real one is there
# (the one-node cluster only: the N-node one is always named by SLURM_CONF).
if [ "$NODES" = 1 ] && { [ ! -e /etc/slurm/slurm.conf ] || [ -L /etc/slurm/slurm.conf ]; }; then
  mkdir -p /etc/slurm; ln -sfn "$STATE/slurm.conf" /etc/slurm/slurm.conf
  touch "$STATE/started/etc_link"
fi

# The nodes' network first: the daemons below listen on the bridge's address.
[ "$NODES" = 1 ] || nodes_net_up "$NODES"

# --- munge ---------------------------------------------------------------------------------------
if [ "$NODES" != 1 ]; then
  head -c 1024 /dev/urandom >"$STATE/munge.key"; chmod 400 "$STATE/munge.key"
  /usr/sbin/munged --force --socket="$STATE/run/munge.sock" --key-file="$STATE/munge.key" \
    --pid-file="$STATE/run/munged.pid" --log-file="$STATE/log/munged.log" \
    --seed-file="$STATE/run/munged.seed" 9>&-
  echo "$STATE/run/munged.pid" >"$STATE/started/munged"
  wait_for 10 munged sh -c "munge -S '$STATE/run/munge.sock' -n | unmunge -S '$STATE/run/munge.sock'"
elif ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge; head -c 1024 /dev/urandom >/etc/munge/munge.key
  fi
  chown -R munge:munge /etc/munge; chmod 700 /etc/munge; chmod 400 /etc/munge/munge.key
  mkdir -p /run/munge /var/lib/munge /var/log/munge
  chown munge:munge /run/munge /var/lib/munge /var/log/munge
  runuser -u munge -- /usr/sbin/munged --force 9>&-
  echo /run/munge/munged.pid >"$STATE/started/munged"
  wait_for 10 munged sh -c 'munge -n | unmunge'
fi

# --- MariaDB + slurmdbd (accounting: without it sacct fails and a cancelled job hangs result()) --
DB=$STATE/mysql   # owned by the mysql user: data, socket, pid and log all live here
mkdir -p "$DB"; chown mysql:mysql "$DB"
mariadb-install-db --user=mysql --datadir="$DB/data" --auth-root-authentication-method=socket \
  --skip-test-db >"$STATE/log/mariadb-install.log" 2>&1
runuser -u mysql -- /usr/sbin/mariadbd --datadir="$DB/data" --socket="$DB/mysql.sock" \
  --pid-file="$DB/mariadbd.pid" --bind-address=127.0.0.1 --port="$DB_PORT" \
  --log-error="$DB/mariadbd.log" --innodb-buffer-pool-size=32M </dev/null >/dev/null 2>&1 9>&- &
echo "$DB/mariadbd.pid" >"$STATE/started/mariadbd"
wait_for 30 mariadbd mariadb --socket="$DB/mysql.sock" -uroot -e 'select 1'
mariadb --socket="$DB/mysql.sock" -uroot <<SQL
CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
CREATE USER 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
SQL
/usr/sbin/slurmdbd 9>&-; echo "$STATE/run/slurmdbd.pid" >"$STATE/started/slurmdbd"
wait_for 30 slurmdbd sacctmgr -n show cluster

# --- slurmctld, then slurmd(s), then wait for idle nodes -----------------------------------------
/usr/sbin/slurmctld -i 9>&-; echo "$STATE/run/slurmctld.pid" >"$STATE/started/slurmctld"
wait_for 30 slurmctld sh -c 'scontrol ping | grep -q UP'
if [ "$NODES" = 1 ]; then
  /usr/sbin/slurmd -N "${NODE_NAMES[0]}" 9>&-
  echo "$STATE/run/slurmd-${NODE_NAMES[0]}.pid" >"$STATE/started/slurmds"
else
  nodes_slurmd_up "$NODES"
fi
until=$((SECONDS + 30))
while [ "$(node_states)" != idle ]; do
  if node_states | grep -qE '^(drain|down|drng)'; then
    scontrol update nodename="$(IFS=,; echo "${NODE_NAMES[*]}")" state=resume >/dev/null 2>&1 || true
  fi
  [ $SECONDS -lt $until ] || die "nodes are '$(node_states | xargs)', not idle; logs in $STATE/log"
  sleep 0.2
done
log "${NODES} node(s) idle (${NODE_NAMES[*]}): $CPUS CPUs, ${MEM_MB} MB each, partition debug (state $STATE)"
hold
