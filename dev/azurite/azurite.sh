#!/usr/bin/env bash
# Starts or stops the pinned Azurite (table + queue services, in memory) for a test run.
#
#   dev/azurite/azurite.sh start [ENV_FILE]   install with `npm ci` if needed, start both
#       services on free loopback ports, wait until they answer, write their pids to
#       dev/azurite/AZURITE_PIDS, print the connection string and, if ENV_FILE is given,
#       write `export DEFENDER_OPS_TEST_STORAGE='...'` to it (source it before cargo test).
#   dev/azurite/azurite.sh stop               kill the services listed in AZURITE_PIDS.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
pids_file="$here/AZURITE_PIDS"
key='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()' 2>/dev/null \
    || node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

wait_up() { # port path
  local i
  for i in $(seq 1 300); do
    # Any HTTP status (403 without auth) means the service is up.
    if curl -s -o /dev/null --noproxy '*' "http://127.0.0.1:$1/devstoreaccount1/$2"; then
      return 0
    fi
    sleep 0.1
  done
  echo "azurite: no answer on port $1 after 30 s" >&2
  return 1
}

stop() {
  if [[ -f "$pids_file" ]]; then
    local pids pid i
    pids="$(cat "$pids_file")"
    for pid in $pids; do kill "$pid" 2>/dev/null || true; done
    # Azurite closes gracefully on SIGTERM but may linger on open connections.
    for i in $(seq 1 30); do
      local alive=""
      for pid in $pids; do kill -0 "$pid" 2>/dev/null && alive=1; done
      [[ -z "$alive" ]] && break
      sleep 0.1
    done
    for pid in $pids; do kill -9 "$pid" 2>/dev/null || true; done
    rm -f "$pids_file"
  fi
}

start() {
  local env_file="${1:-}"
  cd "$here"
  if [[ ! -x node_modules/.bin/azurite-table ]]; then
    flock "$here/.npm-install.lock" sh -c \
      '[ -x node_modules/.bin/azurite-table ] || npm ci --no-audit --no-fund --loglevel=error' >&2
  fi
  stop
  local table_port queue_port
  table_port="$(free_port)"
  queue_port="$(free_port)"
  while [[ "$queue_port" == "$table_port" ]]; do queue_port="$(free_port)"; done
  node_modules/.bin/azurite-table --inMemoryPersistence --silent \
    --tableHost 127.0.0.1 --tablePort "$table_port" >/dev/null 2>"$here/azurite-table.log" </dev/null &
  echo $! >"$pids_file"
  node_modules/.bin/azurite-queue --inMemoryPersistence --silent \
    --queueHost 127.0.0.1 --queuePort "$queue_port" >/dev/null 2>"$here/azurite-queue.log" </dev/null &
  echo $! >>"$pids_file"
  if ! wait_up "$table_port" Tables || ! wait_up "$queue_port" '?comp=list'; then
    cat "$here"/azurite-*.log >&2 || true
    stop
    exit 1
  fi
  local conn="DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=$key;TableEndpoint=http://127.0.0.1:$table_port/devstoreaccount1;QueueEndpoint=http://127.0.0.1:$queue_port/devstoreaccount1;"
  if [[ -n "$env_file" ]]; then
    printf "export DEFENDER_OPS_TEST_STORAGE='%s'\n" "$conn" >"$env_file"
  fi
  echo "$conn"
}

case "${1:-}" in
  start) shift; start "$@" ;;
  stop) stop ;;
  *) echo "usage: $0 start [ENV_FILE] | stop" >&2; exit 2 ;;
esac
