#!/usr/bin/env bash
# The project's test command: `bash infra/test.sh [extra cargo test args]`.
#
# Needs only the Rust toolchain and python3 (3.11). It creates .venv in the repo
# root, installs the pinned test peers of infra/requirements-test.txt (again only
# when that file changed), and runs `cargo test --all-targets "$@"` (without
# --all-targets when the arguments select targets themselves). The tests
# start their own servers (scim2-server, moto_server) and stop them by PID; any
# process of the run still alive when this script exits is killed here.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

venv="$repo/.venv"
requirements="$repo/infra/requirements-test.txt"
stamp="$venv/.requirements-test.installed"
peers=(scim2-server moto_server cargo-lambda cfn-lint)

if [ ! -x "$venv/bin/python" ]; then
    echo "infra/test.sh: creating $venv" >&2
    python3 -m venv "$venv"
fi

needs_install=no
cmp -s "$requirements" "$stamp" || needs_install=yes
for peer in "${peers[@]}"; do
    [ -x "$venv/bin/$peer" ] || needs_install=yes
done
if [ "$needs_install" = yes ]; then
    echo "infra/test.sh: installing infra/requirements-test.txt into .venv" >&2
    "$venv/bin/python" -m pip install --disable-pip-version-check --quiet -r "$requirements"
    cp "$requirements" "$stamp"
fi

export PATH="$venv/bin:$PATH"
export SCIM_TEST_VENV="$venv"

# `--all-targets` unless the caller picks targets (`bash infra/test.sh --test NAME`).
targets=(--all-targets)
for arg in "$@"; do
    case "$arg" in
        --) break ;;
        --lib | --bins | --bin | --bin=* | --tests | --test | --test=* | --examples | --example | --example=* | \
            --benches | --bench | --bench=* | --doc | --all-targets) targets=() ;;
    esac
done

# cargo runs in a process group of its own, so that everything it starts (test
# binaries and the servers they spawn) can be killed at once on exit, even a
# server whose test process died before its guard could stop it.
test_pid=""
test_done=no
cleanup() {
    [ -n "$test_pid" ] || return 0
    # The group (led by cargo under setsid) may still hold orphaned servers.
    kill -TERM -- "-$test_pid" 2>/dev/null || true
    # Without setsid, or when interrupted: cargo itself, still our child.
    if [ "$test_done" = no ]; then
        kill -TERM "$test_pid" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if command -v setsid >/dev/null 2>&1; then
    setsid cargo test --no-fail-fast ${targets[@]+"${targets[@]}"} "$@" &
else
    cargo test --no-fail-fast ${targets[@]+"${targets[@]}"} "$@" &
fi
test_pid=$!

rc=0
wait "$test_pid" || rc=$?
test_done=yes
exit "$rc"
