#!/usr/bin/env bash
# An MLflow tracking server for sweeps whose jobs run on many nodes: one process owns the store
# and the jobs talk HTTP, instead of many hosts locking one sqlite file over a shared filesystem.
# Binds to loopback unless told otherwise: exposing it (--host 0.0.0.0) is a deliberate choice.
#
#   launchers/mlflow_server.sh [--host 127.0.0.1] [--port 5000] [--store outputs/mlflow.db]
#                              [--artifacts outputs/mlartifacts] [-- extra mlflow server options]
#   python train.py -m tracking=server tracking.uri=http://HOST:5000 cluster=slurm ...
#
# The store may also be a database URI (postgresql://...). Runs in the foreground; stop it with
# Ctrl-C (or run it under nohup/tmux/a Slurm job on the login node).
set -euo pipefail
HOST=127.0.0.1 PORT=5000 STORE=outputs/mlflow.db ARTIFACTS=outputs/mlartifacts
while [ $# -gt 0 ]; do
  case "$1" in
    --host) HOST=$2; shift 2 ;;
    --port) PORT=$2; shift 2 ;;
    --store) STORE=$2; shift 2 ;;
    --artifacts) ARTIFACTS=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "mlflow_server.sh: unknown option $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
case "$STORE" in
  *://*) BACKEND=$STORE ;;
  *) mkdir -p "$(dirname "$STORE")"; BACKEND="sqlite:///$(realpath -m "$STORE")" ;;
esac
mkdir -p "$ARTIFACTS"
extra=()
if [ "$HOST" != 127.0.0.1 ] && [ "$HOST" != localhost ]; then
  # MLflow rejects Host headers other than localhost/private IPs (DNS-rebinding guard): allow the
  # names that compute nodes will use to reach this machine.
  names="$(hostname),$(hostname -f 2>/dev/null || hostname),localhost,127.0.0.1"
  extra=(--allowed-hosts "$names,$(echo "$names" | sed "s/\(,\|$\)/:$PORT\1/g")")
  echo "mlflow_server.sh: listening on $HOST:$PORT: reachable by other hosts" >&2
fi
echo "mlflow_server.sh: tracking server http://$HOST:$PORT (store $BACKEND, artifacts $ARTIFACTS)" >&2
exec mlflow server --host "$HOST" --port "$PORT" --backend-store-uri "$BACKEND" \
  --artifacts-destination "$(realpath -m "$ARTIFACTS")" --serve-artifacts --workers 1 \
  "${extra[@]}" "$@"
