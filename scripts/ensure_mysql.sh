#!/usr/bin/env bash
# Print a usable MySQL URL for the tests on stdout (line 1).
#
#   url=$(scripts/ensure_mysql.sh | head -n1); export MQ_TEST_MYSQL_URL=$url
#
# 1. MQ_TEST_MYSQL_URL is set: print it.
# 2. Something answers at 127.0.0.1:3306 as root with an empty password: print
#    mysql://root@127.0.0.1:3306/test (creating database `test` if missing).
# 3. Otherwise start a private mariadbd (apt-get install mariadb-server first when it is
#    missing and we are root) in a temporary datadir, on a free port and its own socket.
#    stdout: line 1 the URL, line 2 `pidfile=<path>`; stop it with `kill "$(cat <path>)"`
#    and remove the directory that holds the pid file.
# MQ_FORCE_PRIVATE_MYSQL=1 skips 1 and 2 (to test path 3).
# The server is probed with PyMySQL (the project's own driver, so no MySQL client tools
# are needed): $MQ_PYTHON, default .venv/bin/python (test.sh installs it first), else python3.
set -euo pipefail

log() { echo "ensure_mysql: $*" >&2; }

PY=${MQ_PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3

ready() {  # ready HOST PORT: root with an empty password logs in; database `test` exists
    "$PY" - "$1" "$2" >/dev/null 2>&1 <<'PYEOF'
import sys

import pymysql

conn = pymysql.connect(host=sys.argv[1], port=int(sys.argv[2]), user="root", password="",
                       connect_timeout=2)
with conn.cursor() as cur:
    cur.execute("CREATE DATABASE IF NOT EXISTS test")
conn.close()
PYEOF
}

if [ -z "${MQ_FORCE_PRIVATE_MYSQL:-}" ]; then
    if [ -n "${MQ_TEST_MYSQL_URL:-}" ]; then
        echo "$MQ_TEST_MYSQL_URL"
        exit 0
    fi
    if ready 127.0.0.1 3306; then
        echo "mysql://root@127.0.0.1:3306/test"
        exit 0
    fi
fi

MARIADBD=$(command -v mariadbd || { [ -x /usr/sbin/mariadbd ] && echo /usr/sbin/mariadbd; } \
           || true)
if [ -z "$MARIADBD" ]; then
    if [ "$(id -u)" != 0 ]; then
        log "no mariadbd and not root: install mariadb-server or set MQ_TEST_MYSQL_URL"
        exit 1
    fi
    log "installing mariadb-server with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get update -q >&2  # a fresh image has no lists
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q mariadb-server >&2
    MARIADBD=/usr/sbin/mariadbd
fi
INSTALL_DB=$(command -v mariadb-install-db || command -v mysql_install_db)

dir=$(mktemp -d /tmp/mqmysql.XXXXXX)
port=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
user=$(id -un)
log "private mariadbd in $dir on 127.0.0.1:$port"
"$INSTALL_DB" --no-defaults --datadir="$dir/data" --user="$user" \
    --auth-root-authentication-method=normal --skip-test-db >"$dir/install.log" 2>&1 \
    || { log "mariadb-install-db failed: $(tail -n 5 "$dir/install.log")"; rm -rf "$dir"; exit 1; }
"$MARIADBD" --no-defaults --datadir="$dir/data" --user="$user" \
    --bind-address=127.0.0.1 --port="$port" --socket="$dir/mysqld.sock" \
    --pid-file="$dir/mysqld.pid" --log-error="$dir/error.log" \
    --skip-name-resolve --innodb-buffer-pool-size=32M >/dev/null 2>&1 &
mariadbd_pid=$!

for _ in $(seq 1 300); do  # up to 30 s
    if ready 127.0.0.1 "$port"; then
        echo "mysql://root@127.0.0.1:$port/test"
        echo "pidfile=$dir/mysqld.pid"
        log "stop it with: kill \"\$(cat $dir/mysqld.pid)\"; rm -rf $dir"
        exit 0
    fi
    sleep 0.1
done
log "mariadbd did not answer within 30 s: $(tail -n 5 "$dir/error.log" 2>/dev/null)"
kill "$mariadbd_pid" 2>/dev/null || true
wait "$mariadbd_pid" 2>/dev/null || true
rm -rf "$dir"
exit 1
