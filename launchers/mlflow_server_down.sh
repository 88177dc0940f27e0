#!/usr/bin/env bash
# Stop what launchers/mlflow_server.sh started, and only that: the background MLflow server
# (--daemon; its whole process group: uvicorn runs in a child) and then its own MariaDB (--db
# mariadb). A database or server this script did not start is never touched. Other holders still
# alive keep them running unless --force; --purge also deletes the database's data.
#
#   launchers/mlflow_server_down.sh [--force] [--purge]
set -euo pipefail
STATE=${PINCHPOINT_MLFLOW_STATE:-/tmp/pinchpoint-mlflow-server}
HOLDER=${PINCHPOINT_MLFLOW_HOLDER:-$PPID}
FORCE=0 PURGE=0
for arg in "$@"; do case $arg in --force) FORCE=1 ;; --purge) PURGE=1 ;;
  *) echo "usage: $0 [--force] [--purge]" >&2; exit 2 ;; esac; done
log() { echo "mlflow_server_down: $*" >&2; }
if [ -z "$(ls -A "$STATE/started" 2>/dev/null)" ]; then
  log "nothing started by mlflow_server.sh in $STATE"
  [ $PURGE = 0 ] || rm -rf "$STATE/mysql"
  exit 0
fi
if [ -z "${PINCHPOINT_MLFLOW_LOCKED:-}" ]; then exec 9>"$STATE.lock"; flock 9; fi

running() { [ -n "$1" ] && [ -e "/proc/$1" ] && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null; }

if [ -f "$STATE/holders" ]; then   # drop this holder and the dead; stop only when none is left
  left=$(grep -vx -- "$HOLDER" "$STATE/holders" | while read -r p; do
         running "$p" && echo "$p"; done || true)
  printf '%s' "${left:+$left$'\n'}" >"$STATE/holders"
  if [ -n "$left" ] && [ $FORCE = 0 ]; then
    log "still used by pid(s) $(echo $left) (--force stops it anyway)"; exit 0
  fi
fi

gone() {  # gone PID GROUP: the process (or, GROUP=1, every process of its group) has exited
  local p
  if [ "$2" = 1 ]; then for p in $(pgrep -g "$1" || true); do running "$p" && return 1; done; return 0; fi
  ! running "$1"
}
stop() {  # stop NAME GROUP: TERM what was recorded, wait until gone, else KILL
  local rec=$STATE/started/$1 group=$2 pid target
  [ -f "$rec" ] || return 0
  pid=$(cat "$(cat "$rec")" 2>/dev/null || true)
  if [ -n "$pid" ] && ! gone "$pid" "$group"; then
    target=$pid; [ "$group" = 0 ] || target=-$pid
    kill -TERM -- "$target" 2>/dev/null || true
    local until=$((SECONDS + 20))
    while ! gone "$pid" "$group" && [ $SECONDS -lt $until ]; do sleep 0.1; done
    gone "$pid" "$group" || { log "$1 ($pid) ignored TERM; killing"; kill -KILL -- "$target" 2>/dev/null || true; }
  fi
  rm -f "$rec"
}
# The server first (it holds connections to the database); its process group was made by setsid
# in mlflow_server.sh, so it holds nothing else.
stop mlflow 1
stop mariadbd 0
rm -f "$STATE/mlflow.pid" "$STATE/server.conf" "$STATE/holders"
[ $PURGE = 0 ] || rm -rf "$STATE/mysql"
log "stopped (logs kept in $STATE/log)"
