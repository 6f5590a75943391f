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
set -euo pipefail

log() { echo "ensure_mysql: $*" >&2; }

admin() {  # the client that pings a server; mariadb-admin and mysqladmin are the same tool
    command -v mariadb-admin || command -v mysqladmin || true
}

client() {
    command -v mariadb || command -v mysql || true
}

answers() {  # answers HOST PORT: root with an empty password can log in
    local a; a=$(admin)
    [ -n "$a" ] || return 1
    "$a" --no-defaults --protocol=tcp -h "$1" -P "$2" -uroot --connect-timeout=2 ping \
        >/dev/null 2>&1
}

if [ -z "${MQ_FORCE_PRIVATE_MYSQL:-}" ]; then
    if [ -n "${MQ_TEST_MYSQL_URL:-}" ]; then
        echo "$MQ_TEST_MYSQL_URL"
        exit 0
    fi
    if answers 127.0.0.1 3306; then
        "$(client)" --no-defaults --protocol=tcp -h 127.0.0.1 -P 3306 -uroot \
            -e 'CREATE DATABASE IF NOT EXISTS test' >/dev/null
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
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q mariadb-server >&2
    MARIADBD=/usr/sbin/mariadbd
fi
INSTALL_DB=$(command -v mariadb-install-db || command -v mysql_install_db)

dir=$(mktemp -d /tmp/mqmysql.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
user=$(id -un)
log "private mariadbd in $dir on 127.0.0.1:$port"
"$INSTALL_DB" --no-defaults --datadir="$dir/data" --user="$user" \
    --auth-root-authentication-method=normal --skip-test-db >"$dir/install.log" 2>&1 \
    || { log "mariadb-install-db failed, see $dir/install.log"; exit 1; }
"$MARIADBD" --no-defaults --datadir="$dir/data" --user="$user" \
    --bind-address=127.0.0.1 --port="$port" --socket="$dir/mysqld.sock" \
    --pid-file="$dir/mysqld.pid" --log-error="$dir/error.log" \
    --skip-name-resolve --innodb-buffer-pool-size=32M >/dev/null 2>&1 &

for _ in $(seq 1 300); do  # up to 30 s
    if answers 127.0.0.1 "$port"; then
        "$(client)" --no-defaults --protocol=tcp -h 127.0.0.1 -P "$port" -uroot \
            -e 'CREATE DATABASE IF NOT EXISTS test' >/dev/null
        echo "mysql://root@127.0.0.1:$port/test"
        echo "pidfile=$dir/mysqld.pid"
        log "stop it with: kill \"\$(cat $dir/mysqld.pid)\"; rm -rf $dir"
        exit 0
    fi
    sleep 0.1
done
log "mariadbd did not answer within 30 s, see $dir/error.log"
exit 1
