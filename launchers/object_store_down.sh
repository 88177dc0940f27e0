#!/usr/bin/env bash
# Stop the SeaweedFS server started by launchers/object_store_up.sh (only that one: a server this
# script did not start is never touched). Other holders still alive keep it running unless
# --force; --purge also deletes its data folder.
#
#   launchers/object_store_down.sh [--force] [--purge]
set -euo pipefail
STATE=${PINCHPOINT_S3_STATE:-/tmp/pinchpoint-s3}
HOLDER=${PINCHPOINT_S3_HOLDER:-$PPID}
FORCE=0; PURGE=0
for arg in "$@"; do case $arg in --force) FORCE=1 ;; --purge) PURGE=1 ;;
  *) echo "usage: $0 [--force] [--purge]" >&2; exit 2 ;; esac; done
log() { echo "object_store_down: $*" >&2; }
[ -f "$STATE/weed.pid" ] || { log "nothing started by object_store_up.sh in $STATE"; exit 0; }
if [ -z "${PINCHPOINT_S3_LOCKED:-}" ]; then exec 9>"$STATE.lock"; flock 9; fi

running() { [ -n "$1" ] && [ -e "/proc/$1" ] && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null; }

if [ -f "$STATE/holders" ]; then   # drop this holder and the dead; stop only when none is left
  left=$(grep -vx -- "$HOLDER" "$STATE/holders" | while read -r p; do
         running "$p" && echo "$p"; done || true)
  printf '%s' "${left:+$left$'\n'}" >"$STATE/holders"
  if [ -n "$left" ] && [ $FORCE = 0 ]; then
    log "still used by pid(s) $(echo $left) (--force stops it anyway)"; exit 0
  fi
fi

pid=$(cat "$STATE/weed.pid" 2>/dev/null || true)
if running "$pid"; then
  # weed starts a graceful stop on INT but its gRPC servers can wait on open streams for a
  # minute; objects are on disk once their PUT returned, so KILL after 5 s.
  kill -INT "$pid" 2>/dev/null || true
  until=$((SECONDS + 5))
  while running "$pid" && [ $SECONDS -lt $until ]; do sleep 0.2; done
  running "$pid" && { log "weed ($pid) still running; killing"; kill -9 "$pid" 2>/dev/null || true; }
fi
rm -f "$STATE/weed.pid" "$STATE/holders"
[ $PURGE = 1 ] && rm -rf "$STATE/data"
log "stopped (log kept in $STATE/log)"
