#!/usr/bin/env bash
# The whole test suite from a fresh checkout: installs the project and its test tools into
# .venv, makes sure a MariaDB/MySQL server answers (the one on 127.0.0.1:3306, or a private
# mariadbd started here), runs ruff and pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'

# The web page's tests drive Debian's chromium (Playwright never downloads a browser here).
if ! command -v chromium >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

# tests/runtime/test_systemd_unit.py runs `systemd-analyze verify` on contrib/systemd.
if ! command -v systemd-analyze >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null
fi

# tests/monitoring/test_prometheus_scrape.py runs a real Prometheus against a real server.
if ! command -v prometheus >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

# ensure_mysql.sh prints the URL on line 1 and, when it started a private mariadbd,
# `pidfile=<path>` on line 2 (that server is stopped again when the tests end).
mysql_info=$(scripts/ensure_mysql.sh)
MQ_TEST_MYSQL_URL=$(printf '%s\n' "$mysql_info" | sed -n 1p)
MQ_PRIVATE_MYSQL_PIDFILE=$(printf '%s\n' "$mysql_info" | sed -n 's/^pidfile=//p')
export MQ_TEST_MYSQL_URL
stop_private_mysql() {
  local pidfile=${MQ_PRIVATE_MYSQL_PIDFILE:-} pid
  [ -n "$pidfile" ] && [ -s "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  rm -rf "$(dirname "$pidfile")"   # the private server's temporary datadir
}
trap stop_private_mysql EXIT

.venv/bin/ruff check mi_server mi_fifo tests benchmarks compat
.venv/bin/python -m pytest -n 2 -p no:cacheprovider "$@"
