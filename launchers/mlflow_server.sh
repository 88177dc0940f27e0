#!/usr/bin/env bash
# An MLflow tracking server for sweeps whose jobs run on many nodes: one process owns the store
# and the jobs talk HTTP, instead of many hosts locking one sqlite file over a shared filesystem.
# Binds to loopback unless told otherwise: exposing it (--host 0.0.0.0) is a deliberate choice.
#
#   launchers/mlflow_server.sh [--host 127.0.0.1] [--port 5000] [--store outputs/mlflow.db]
#                              [--artifacts outputs/mlartifacts] [--db sqlite|mariadb]
#                              [--workers 1] [--daemon] [-- extra mlflow server options]
#   python train.py -m tracking=server tracking.uri=http://HOST:5000 cluster=slurm ...
#   launchers/mlflow_server_down.sh [--force] [--purge]   # stops what this script started
#
# --db sqlite (default): the store is the sqlite file --store (or a database URI given there:
#   mysql+pymysql://..., postgresql://...: a database someone else runs).
# --db mariadb: a MariaDB server of this script's own holds the store, for a cluster's worth of
#   writers. It lives in the state folder (data, socket, pid, log; kept across stops, --purge in
#   mlflow_server_down.sh deletes it), listens on its own socket and on 127.0.0.1 only, port
#   PINCHPOINT_MLFLOW_DB_PORT (default 3309: the Slurm clusters' accounting MariaDBs use 3307 and
#   3308, and are never touched). Started once, reused by later calls; the MLflow server reaches
#   it through the socket with a generated password (kept out of the process list).
# --daemon: start in the background, wait until the server answers /health, print
#   `export MLFLOW_TRACKING_URI=http://...` and return; a server this script already runs with the
#   same settings is reused. Without it the server runs in the foreground (Ctrl-C stops it; a
#   MariaDB it started keeps running until mlflow_server_down.sh).
# Env: PINCHPOINT_MLFLOW_STATE (state folder, default /tmp/pinchpoint-mlflow-server),
#      PINCHPOINT_MLFLOW_DB_PORT, PINCHPOINT_MLFLOW_HOLDER (a pid that uses the server;
#      mlflow_server_down.sh stops it only when no holder is alive; default: the caller).
# Exit status: 0 up (or, in the foreground, the server's own status), 2 a bad option,
#   3 cannot start here (MariaDB not installable or startable: not root, no apt), 1 anything else
#   (PyMySQL missing included: pip install -e '.[server]').
set -euo pipefail
HOST=127.0.0.1 PORT=5000 STORE=outputs/mlflow.db ARTIFACTS=outputs/mlartifacts DB=sqlite
WORKERS=1 DAEMON=0 STORE_GIVEN=0
usage() { echo "mlflow_server.sh: $* (see the header of $0)" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --host) HOST=$2; shift 2 ;;
    --port) PORT=$2; shift 2 ;;
    --store) STORE=$2; STORE_GIVEN=1; shift 2 ;;
    --artifacts) ARTIFACTS=$2; shift 2 ;;
    --db) DB=$2; shift 2 ;;
    --workers) WORKERS=$2; shift 2 ;;
    --daemon) DAEMON=1; shift ;;
    --) shift; break ;;
    *) usage "unknown option $1" ;;
  esac
done
case "$DB" in sqlite|mariadb) ;; *) usage "--db must be sqlite or mariadb, not '$DB'" ;; esac
[ "$DB" = sqlite ] || [ $STORE_GIVEN = 0 ] ||
  usage "--store names a sqlite file or a database URI; --db $DB is a database of this script's own: give one or the other"
[[ "$PORT" =~ ^[0-9]+$ ]] || usage "--port must be a port number, not '$PORT'"
[[ "$WORKERS" =~ ^[1-9][0-9]*$ ]] || usage "--workers must be a whole number > 0, not '$WORKERS'"
STATE=${PINCHPOINT_MLFLOW_STATE:-/tmp/pinchpoint-mlflow-server}
DB_PORT=${PINCHPOINT_MLFLOW_DB_PORT:-3309}
HOLDER=${PINCHPOINT_MLFLOW_HOLDER:-$PPID}
[ $DAEMON = 1 ] || HOLDER=$$   # the foreground server is this pid after exec: it holds the DB

log() { echo "mlflow_server.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
cannot() { log "CANNOT START: $*"; exit 3; }
alive() {  # a pid file whose process runs (a zombie counts as gone: init here reaps slowly)
  local p; p=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$p" ] && [ -e "/proc/$p" ] && ! grep -q '^State:.*Z' "/proc/$p/status" 2>/dev/null
}
listening() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
# /health is exempt from MLflow's Host check, so it proves the process serves, not who may log.
healthy() { curl -sf -m 2 -o /dev/null "http://$1:$PORT/health"; }
hold() { echo "$HOLDER" >>"$STATE/holders"; }

mkdir -p "$STATE/log" "$STATE/started"
# One start/stop at a time (tests may start servers in parallel); daemons get 9>&- so that they
# do not inherit the lock.
exec 9>"$STATE.lock"; flock 9

# --- the address clients use, and the names MLflow must accept in their Host header --------------
if [ "$HOST" = 0.0.0.0 ]; then CLIENT_HOST=$(hostname -f 2>/dev/null || hostname) PROBE=127.0.0.1
else CLIENT_HOST=$HOST PROBE=$HOST; fi
URI=http://$CLIENT_HOST:$PORT
extra=()
if [ "$HOST" != 127.0.0.1 ] && [ "$HOST" != localhost ]; then
  # MLflow rejects Host headers other than those listed (DNS-rebinding guard): allow the names and
  # addresses that compute nodes use to reach this machine (emulated nodes: the bridge address).
  names="$(hostname),$(hostname -f 2>/dev/null || hostname),localhost,127.0.0.1"
  for a in $(hostname -I 2>/dev/null) $([ "$HOST" = 0.0.0.0 ] || echo "$HOST"); do names+=",$a"; done
  extra=(--allowed-hosts "$names,$(echo "$names" | sed "s/\(,\|$\)/:$PORT\1/g")")
  log "listening on $HOST:$PORT: reachable by other hosts"
fi

# --- a daemon this script already runs: reuse it when the settings match ------------------------
WANT="$URI $DB"; [ "$DB" != sqlite ] || WANT+=" $STORE"
if alive "$STATE/mlflow.pid"; then
  [ "$(cat "$STATE/server.conf" 2>/dev/null)" = "$WANT" ] ||
    die "a server started by this script already runs ($(cat "$STATE/server.conf" 2>/dev/null)); stop it with launchers/mlflow_server_down.sh"
  healthy "$PROBE" || die "the server this script started (pid $(cat "$STATE/mlflow.pid")) does not answer $URI/health; see $STATE/log/mlflow.log"
  log "already up at $URI"; hold; echo "export MLFLOW_TRACKING_URI=$URI"; exit 0
fi
listening "$PROBE" "$PORT" && die "port $PORT on $PROBE is taken by a process this script did not start: choose another --port"

# --- MariaDB of our own --------------------------------------------------------------------------
MY=$STATE/mysql   # owned by the mysql user: data, socket, pid and log all live here
mariadb_up() {
  local missing=() p
  for p in mariadb-server mariadb-client; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || cannot "--db mariadb: need root to install ${missing[*]}"
    command -v apt-get >/dev/null || cannot "--db mariadb: no apt-get to install ${missing[*]}"
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 ||
      { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; } ||
      cannot "--db mariadb: apt-get could not install ${missing[*]} (offline?)"
  fi
  [ "$(id -u)" = 0 ] || cannot "--db mariadb: run as root (the database runs as the mysql user)"
  python -c 'import pymysql' 2>/dev/null ||
    die "--db mariadb: this Python has no PyMySQL (pip install -e '.[server]')"
  if alive "$MY/mariadbd.pid"; then return 0; fi
  listening 127.0.0.1 "$DB_PORT" &&
    die "port $DB_PORT is taken by another database: set PINCHPOINT_MLFLOW_DB_PORT to a free port"
  mkdir -p "$MY"; chown mysql:mysql "$MY"
  runuser -u mysql -- test -w "$MY" ||
    die "the mysql user cannot reach $MY: put PINCHPOINT_MLFLOW_STATE in a folder all users may enter"
  if [ ! -d "$MY/data/mysql" ]; then
    mariadb-install-db --no-defaults --user=mysql --datadir="$MY/data" \
      --auth-root-authentication-method=socket --skip-test-db >"$STATE/log/mariadb-install.log" 2>&1 ||
      die "mariadb-install-db failed; see $STATE/log/mariadb-install.log"
  fi
  # --no-defaults: the machine's my.cnf (socket, port, bind address) is not ours to follow.
  setsid runuser -u mysql -- /usr/sbin/mariadbd --no-defaults --datadir="$MY/data" \
    --socket="$MY/mysql.sock" --pid-file="$MY/mariadbd.pid" --bind-address=127.0.0.1 \
    --port="$DB_PORT" --log-error="$MY/mariadbd.log" --innodb-buffer-pool-size=64M \
    --max-connections=500 </dev/null >/dev/null 2>&1 9>&- &
  echo "$MY/mariadbd.pid" >"$STATE/started/mariadbd"
  local until=$((SECONDS + 30))
  until mariadb --no-defaults --socket="$MY/mysql.sock" -uroot -e 'select 1' >/dev/null 2>&1; do
    [ $SECONDS -lt $until ] || die "MariaDB did not come up in 30 s; see $MY/mariadbd.log"; sleep 0.2
  done
  if [ ! -s "$MY/mlflow.pass" ]; then   # first start: the database and its user
    (umask 077; head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$MY/mlflow.pass")
    mariadb --no-defaults --socket="$MY/mysql.sock" -uroot <<SQL
CREATE DATABASE IF NOT EXISTS mlflow CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
CREATE USER IF NOT EXISTS 'mlflow'@'localhost' IDENTIFIED BY '$(cat "$MY/mlflow.pass")';
GRANT ALL ON mlflow.* TO 'mlflow'@'localhost';
SQL
  fi
  log "MariaDB up (socket $MY/mysql.sock, 127.0.0.1:$DB_PORT)"
}

# A failed start stops whatever it had started (lock held: tell mlflow_server_down.sh).
trap '[ $? = 0 ] || [ -z "$(ls -A "$STATE/started")" ] ||
      PINCHPOINT_MLFLOW_LOCKED=1 PINCHPOINT_MLFLOW_HOLDER=$HOLDER "$(dirname "$0")/mlflow_server_down.sh" >&2' EXIT
if [ "$DB" = mariadb ]; then
  mariadb_up
  SHOWN="mariadb database mlflow in $MY"
  export MLFLOW_BACKEND_STORE_URI="mysql+pymysql://mlflow:$(cat "$MY/mlflow.pass")@localhost/mlflow?unix_socket=$MY/mysql.sock&charset=utf8mb4"
else
  case "$STORE" in
    *://*) MLFLOW_BACKEND_STORE_URI=$STORE ;;
    *) mkdir -p "$(dirname "$STORE")"; MLFLOW_BACKEND_STORE_URI="sqlite:///$(realpath -m "$STORE")" ;;
  esac
  export MLFLOW_BACKEND_STORE_URI; SHOWN=$(echo "$STORE" | sed 's|//[^/@]*@|//***@|')
fi
mkdir -p "$ARTIFACTS"
# The server's job runner (GenAI judges and scorers; pinchpoint uses none) is seven more
# processes: off unless asked for.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}
server=(mlflow server --host "$HOST" --port "$PORT" --artifacts-destination "$(realpath -m "$ARTIFACTS")"
        --serve-artifacts --workers "$WORKERS" "${extra[@]}" "$@")
log "tracking server $URI (store $SHOWN, artifacts $ARTIFACTS)"
if [ $DAEMON = 0 ]; then
  trap - EXIT; [ "$DB" = sqlite ] || hold
  exec 9>&- "${server[@]}"
fi

# --- daemon: own session (stopped as a process group: uvicorn runs in a child), wait for /health --
setsid "${server[@]}" </dev/null >"$STATE/log/mlflow.log" 2>&1 9>&- &
echo $! >"$STATE/mlflow.pid"; echo "$STATE/mlflow.pid" >"$STATE/started/mlflow"
echo "$WANT" >"$STATE/server.conf"
until=$((SECONDS + 120))   # a fresh store runs its schema migrations first (seconds on MariaDB)
until healthy "$PROBE"; do
  alive "$STATE/mlflow.pid" || die "mlflow server exited: $(grep -m1 -iE 'error|exception' "$STATE/log/mlflow.log" || tail -n1 "$STATE/log/mlflow.log") (log: $STATE/log/mlflow.log)"
  [ $SECONDS -lt $until ] || die "mlflow server did not answer $URI/health in 120 s; see $STATE/log/mlflow.log"
  sleep 0.3
done
trap - EXIT
log "up at $URI (pid $(cat "$STATE/mlflow.pid"), log $STATE/log/mlflow.log)"
hold; echo "export MLFLOW_TRACKING_URI=$URI"
