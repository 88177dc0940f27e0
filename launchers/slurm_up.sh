#!/usr/bin/env bash
# Start a real single-node Slurm cluster on this machine (munge, MariaDB + slurmdbd for
# accounting, slurmctld, slurmd) and wait until its node is idle. Idempotent: installs what is
# missing, reuses a cluster it already started, and records which daemons it started so that
# launchers/slurm_down.sh stops only those. Facts behind the settings:
# ../shared/notes/slurm-on-one-machine.md.
#
#   launchers/slurm_up.sh            # then: export SLURM_CONF=/tmp/pinchpoint-slurm/slurm.conf
#
# Env: PINCHPOINT_SLURM_STATE (state folder, default /tmp/pinchpoint-slurm),
#      PINCHPOINT_SLURM_CPUS (CPUs the node offers; default max(nproc, 16) so that the tests' 8
#      simultaneous jobs plus a few more run at once on a laptop, oversubscribing its cores),
#      PINCHPOINT_SLURM_HOLDER (a pid that uses the cluster; slurm_down.sh stops it only when no
#      holder is alive; default: the caller).
# Exit status: 0 up, 3 cannot install or start here (not root, no apt), 1 anything else.
set -euo pipefail
STATE=${PINCHPOINT_SLURM_STATE:-/tmp/pinchpoint-slurm}
HOLDER=${PINCHPOINT_SLURM_HOLDER:-$PPID}
NODE=$(hostname -s)
export SLURM_CONF=$STATE/slurm.conf
DB_PORT=${PINCHPOINT_SLURM_DB_PORT:-3307}

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
node_state() { sinfo -h -N -n "$NODE" -o %t 2>/dev/null | head -1; }
wait_for() {  # wait_for SECONDS WHAT COMMAND...
  local until=$((SECONDS + $1)) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $until ] || die "$what did not come up; logs in $STATE/log"; sleep 0.2
  done
}
hold() { echo "$HOLDER" >>"$STATE/holders"; echo "export SLURM_CONF=$SLURM_CONF"; }

# --- already running (started by an earlier call): just register this holder ------------------
if alive "$STATE/run/slurmctld.pid" && alive "$STATE/run/slurmd.pid" &&
   [[ "$(node_state)" =~ ^(idle|mix|alloc|comp) ]]; then
  log "cluster already up ($STATE)"; hold; exit 0
fi

# A failed start stops whatever it had started (lock already held: tell slurm_down.sh).
trap '[ $? = 0 ] || PINCHPOINT_SLURM_LOCKED=1 "$(dirname "$0")/slurm_down.sh" --force >&2' EXIT

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
  PINCHPOINT_SLURM_LOCKED=1 "$(dirname "$0")/slurm_down.sh" --force >&2
fi
rm -rf "$STATE"; mkdir -p "$STATE"/{run,log,ctld,spool,started}
CPUS=${PINCHPOINT_SLURM_CPUS:-$(( $(nproc) > 16 ? $(nproc) : 16 ))}
MEM_MB=$(awk '/MemAvailable/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
sed -e "s|@STATE@|$STATE|g" -e "s|@NODE@|$NODE|g" -e "s|@CPUS@|$CPUS|g" \
    -e "s|@MEM_MB@|$MEM_MB|g" "$(dirname "$0")/slurm/slurm.conf.in" >"$STATE/slurm.conf"
DB_PASS=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
sed -e "s|@STATE@|$STATE|g" -e "s|@DB_PORT@|$DB_PORT|g" -e "s|@DB_PASS@|$DB_PASS|g" \
    "$(dirname "$0")/slurm/slurmdbd.conf.in" >"$STATE/slurmdbd.conf"
chmod 600 "$STATE/slurmdbd.conf"   # slurmdbd refuses a readable file (it holds the DB password)
# Client tools without SLURM_CONF read /etc/slurm/slurm.conf: link it unless a real one is there.
if [ ! -e /etc/slurm/slurm.conf ] || [ -L /etc/slurm/slurm.conf ]; then
  mkdir -p /etc/slurm; ln -sfn "$STATE/slurm.conf" /etc/slurm/slurm.conf
  touch "$STATE/started/etc_link"
fi

# --- munge ---------------------------------------------------------------------------------------
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
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

# --- slurmctld, then slurmd, then wait for an idle node ------------------------------------------
/usr/sbin/slurmctld -i 9>&-; echo "$STATE/run/slurmctld.pid" >"$STATE/started/slurmctld"
wait_for 30 slurmctld sh -c 'scontrol ping | grep -q UP'
/usr/sbin/slurmd -N "$NODE" 9>&-; echo "$STATE/run/slurmd.pid" >"$STATE/started/slurmd"
until=$((SECONDS + 30))
while [[ ! "$(node_state)" =~ ^idle ]]; do
  if [[ "$(node_state)" =~ ^(drain|down|drng) ]]; then
    scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
  fi
  [ $SECONDS -lt $until ] || die "node $NODE is '$(node_state)', not idle; logs in $STATE/log"
  sleep 0.2
done
log "node $NODE idle: $CPUS CPUs, ${MEM_MB} MB, partition debug (state $STATE)"
hold
