#!/usr/bin/env bash
# A vmemlab cluster on this machine: nginx in front, Redis, N gunicorn worker processes.
#
#   deploy/cluster.sh start    (make cluster)       deploy/cluster.sh stop   (make cluster-stop)
#   deploy/cluster.sh status
#
# nginx and redis-server come from Debian's packages, installed when missing (as root, like
# .ci/run). Everything the cluster writes (configs, pid files, logs, the shared secret key,
# shared files) goes to $VMEMLAB_CLUSTER_DIR. Settings, each with its default:
#   VMEMLAB_CLUSTER_DIR=.cluster  VMEMLAB_CLUSTER_LISTEN=127.0.0.1:8080
#   VMEMLAB_CLUSTER_WORKERS=3     VMEMLAB_CLUSTER_WORKER_PORT=5101 (then 5102, ...)
#   VMEMLAB_CLUSTER_REDIS_PORT=6390  VENV=.venv
# Any other VMEMLAB_* variable reaches every worker (e.g. VMEMLAB_MAX_MACHINES).
set -euo pipefail
cd "$(dirname "$0")/.."

RUN=${VMEMLAB_CLUSTER_DIR:-.cluster}
LISTEN=${VMEMLAB_CLUSTER_LISTEN:-127.0.0.1:8080}
WORKERS=${VMEMLAB_CLUSTER_WORKERS:-3}
WORKER_PORT=${VMEMLAB_CLUSTER_WORKER_PORT:-5101}
REDIS_PORT=${VMEMLAB_CLUSTER_REDIS_PORT:-6390}
VENV=${VENV:-.venv}
mkdir -p "$RUN"
RUN=$(cd "$RUN" && pwd)

need_packages() {
  local packages=()
  command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || packages+=(nginx)
  command -v redis-server >/dev/null || packages+=(redis-server)
  if [ ${#packages[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
      echo "cluster: ${packages[*]} missing; install them (apt-get install ${packages[*]})" >&2
      exit 1
    fi
    echo "cluster: installing ${packages[*]} from Debian's packages" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${packages[@]}" >/dev/null
  fi
}

nginx_bin() { command -v nginx || echo /usr/sbin/nginx; }

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_http() {  # URL SECONDS
  local deadline=$((SECONDS + $2))
  until "$VENV/bin/python" -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=2)" "$1" 2>/dev/null; do
    if [ $SECONDS -ge $deadline ]; then echo "cluster: $1 did not answer" >&2; return 1; fi
    sleep 0.2
  done
}

start() {
  need_packages
  [ -x "$VENV/bin/gunicorn" ] || { echo "cluster: $VENV/bin/gunicorn missing: run make venv" >&2; exit 1; }
  mkdir -p "$RUN/nginx-tmp" "$RUN/shared"
  [ -s "$RUN/secret_key" ] || (umask 077; "$VENV/bin/python" -c "import secrets; print(secrets.token_hex(32))" > "$RUN/secret_key")

  if ! alive "$RUN/redis.pid"; then
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --daemonize yes --pidfile "$RUN/redis.pid" \
      --dir "$RUN" --logfile "$RUN/redis.log" --save "" --appendonly no >/dev/null
    for _ in $(seq 50); do alive "$RUN/redis.pid" && break; sleep 0.1; done
  fi

  local upstreams="" i port
  for i in $(seq 1 "$WORKERS"); do
    port=$((WORKER_PORT + i - 1))
    upstreams+="        server 127.0.0.1:$port max_fails=1 fail_timeout=10s;"$'\n'
    alive "$RUN/w$i.pid" && continue
    VMEMLAB_BIND="127.0.0.1:$port" VMEMLAB_WORKER_NAME="w$i" \
    VMEMLAB_MESSAGE_QUEUE="redis://127.0.0.1:$REDIS_PORT/0" \
    VMEMLAB_STORE_URI="redis://127.0.0.1:$REDIS_PORT/1" \
    VMEMLAB_SECRET_KEY_FILE="$RUN/secret_key" VMEMLAB_TRUSTED_PROXIES=1 \
    VMEMLAB_SHARE_DIR="${VMEMLAB_SHARE_DIR:-$RUN/shared}" \
      "$VENV/bin/gunicorn" -c deploy/gunicorn.conf.py --daemon --pid "$RUN/w$i.pid" \
        --control-socket "$RUN/w$i.ctl" --error-logfile "$RUN/w$i.log"
  done
  for i in $(seq 1 "$WORKERS"); do
    wait_http "http://127.0.0.1:$((WORKER_PORT + i - 1))/healthz" 60
  done

  sed -e "s|@RUN@|$RUN|g" -e "s|@LISTEN@|$LISTEN|g" deploy/nginx.conf \
    | awk -v ups="$upstreams" '{ if ($0 == "@UPSTREAMS@") printf "%s", ups; else print }' \
    > "$RUN/nginx.conf"
  if alive "$RUN/nginx.pid"; then
    "$(nginx_bin)" -c "$RUN/nginx.conf" -p "$RUN" -s reload
  else
    "$(nginx_bin)" -c "$RUN/nginx.conf" -p "$RUN"
  fi
  wait_http "http://$LISTEN/healthz" 20
  echo "cluster: nginx on http://$LISTEN/ -> $WORKERS workers (ports $WORKER_PORT..$((WORKER_PORT + WORKERS - 1))), redis on 127.0.0.1:$REDIS_PORT; state in $RUN"
}

stop_pid() {  # PIDFILE NAME
  if alive "$1"; then
    local pid
    pid=$(cat "$1")
    kill -TERM "$pid"
    for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && { echo "cluster: $2 did not stop; killing it" >&2; kill -KILL "$pid"; }
  fi
  rm -f "$1"
}

stop() {
  if alive "$RUN/nginx.pid"; then
    "$(nginx_bin)" -c "$RUN/nginx.conf" -p "$RUN" -s quit || true
    for _ in $(seq 100); do alive "$RUN/nginx.pid" || break; sleep 0.1; done
  fi
  stop_pid "$RUN/nginx.pid" nginx
  local f
  for f in "$RUN"/w*.pid; do
    [ -e "$f" ] && stop_pid "$f" "$(basename "$f" .pid)"
  done
  stop_pid "$RUN/redis.pid" redis
  echo "cluster: stopped"
}

status() {
  local f
  for f in "$RUN"/nginx.pid "$RUN"/redis.pid "$RUN"/w*.pid; do
    [ -e "$f" ] || continue
    if alive "$f"; then echo "$(basename "$f" .pid): running ($(cat "$f"))"; else echo "$(basename "$f" .pid): stopped"; fi
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
