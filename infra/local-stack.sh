#!/usr/bin/env bash
# Local stand-ins for developers: `bash infra/local-stack.sh start|stop|status`.
#
# start: moto_server (S3, SQS, Secrets Manager) on 127.0.0.1:4566 and
#        scim2-server on 127.0.0.1:8080, PIDs and logs in .local/, then seeds
#        bucket scim-uploads, queues scim-work + scim-work-dlq and secret
#        scim-provisioner (see infra/seed_local.py). moto keeps everything in
#        memory: each start seeds anew.
# stop:  kills both servers by their recorded PIDs.
# Ports and token can be changed with MOTO_PORT, SCIM_PORT, SCIM_TOKEN.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

venv="${SCIM_TEST_VENV:-$repo/.venv}"
state="$repo/.local"
moto_port="${MOTO_PORT:-4566}"
scim_port="${SCIM_PORT:-8080}"
scim_token="${SCIM_TOKEN:-local-dev-token}"

ensure_venv() {
    local requirements="$repo/infra/requirements-test.txt"
    local stamp="$venv/.requirements-test.installed"
    if [ ! -x "$venv/bin/python" ]; then
        python3 -m venv "$venv"
    fi
    if ! cmp -s "$requirements" "$stamp" || [ ! -x "$venv/bin/moto_server" ] || [ ! -x "$venv/bin/scim2-server" ]; then
        "$venv/bin/python" -m pip install --disable-pip-version-check --quiet -r "$requirements"
        cp "$requirements" "$stamp"
    fi
}

running() { # running NAME: true when .local/NAME.pid names a live process
    local pidfile="$state/$1.pid"
    [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

stop_one() {
    local name="$1" pidfile="$state/$1.pid" pid
    [ -f "$pidfile" ] || return 0
    pid="$(cat "$pidfile")"
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
        echo "stopped $name (pid $pid)"
    fi
    rm -f "$pidfile"
}

start() {
    if running moto || running scim; then
        echo "already running (bash infra/local-stack.sh stop first)" >&2
        exit 1
    fi
    ensure_venv
    mkdir -p "$state"
    nohup "$venv/bin/moto_server" -H 127.0.0.1 -p "$moto_port" >"$state/moto.log" 2>&1 &
    echo $! >"$state/moto.pid"
    nohup "$venv/bin/scim2-server" --hostname 127.0.0.1 --port "$scim_port" \
        --bearer-token "$scim_token" >"$state/scim.log" 2>&1 &
    echo $! >"$state/scim.pid"

    if ! "$venv/bin/python" "$repo/infra/seed_local.py" \
        --moto "http://127.0.0.1:$moto_port" \
        --scim "http://127.0.0.1:$scim_port" \
        --token "$scim_token"; then
        echo "seeding failed; logs: .local/moto.log, .local/scim.log" >&2
        tail -n 20 "$state/moto.log" "$state/scim.log" >&2 || true
        stop_one moto
        stop_one scim
        exit 1
    fi
}

case "${1:-}" in
    start) start ;;
    stop)
        stop_one moto
        stop_one scim
        ;;
    status)
        for name in moto scim; do
            if running "$name"; then echo "$name: running (pid $(cat "$state/$name.pid"))"; else echo "$name: stopped"; fi
        done
        ;;
    *)
        echo "usage: bash infra/local-stack.sh start|stop|status" >&2
        exit 2
        ;;
esac
