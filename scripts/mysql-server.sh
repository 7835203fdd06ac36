#!/usr/bin/env bash
# mysql-server.sh — a private MariaDB server for dbpool's tests.
#
#   scripts/mysql-server.sh start   DIR   fresh data dir, free port, test users
#   scripts/mysql-server.sh stop    DIR   clean shutdown, remove DIR/mysql*
#   scripts/mysql-server.sh kill    DIR   SIGKILL the server, keep its data
#   scripts/mysql-server.sh restart DIR   start again on the same port and data
#
# Everything lives under DIR: data in DIR/mysql, socket and pid file in
# DIR/mysql-sock/, connection details in DIR/mysql.env (source it). The
# server listens on 127.0.0.1 only. Every server program runs with
# --no-defaults so that /etc/mysql/my.cnf (a system server's port and socket)
# is never read, and only the pid recorded in DIR is ever signalled.
#
# With DBPOOL_TEST_TLS=1 at start, the server also takes TLS with a
# throw-away CA and certificate for localhost/127.0.0.1 made in
# DIR/mysql-tls (scripts/tls-certs.sh); mysql.env then also names
# DBPOOL_TEST_MYSQL_SSL_CA (that CA) and DBPOOL_TEST_MYSQL_SSL_OTHER_CA (an
# unrelated one). Restart keeps it.
set -euo pipefail
# mariadbd is in /usr/sbin, which a normal user's PATH lacks on Debian.
case :$PATH: in *:/usr/sbin:*) ;; *) PATH=$PATH:/usr/sbin ;; esac

usage() {
    echo "usage: $0 start|stop|kill|restart DIR" >&2
    exit 2
}

[ $# -eq 2 ] || usage
cmd=$1
dir=$2
case $dir in /*) ;; *) dir=$PWD/$dir ;; esac

data=$dir/mysql
run=$dir/mysql-sock
sock=$run/mysqld.sock
pidfile=$run/mysqld.pid
envfile=$dir/mysql.env
errlog=$run/error.log
tlsdir=$dir/mysql-tls

log() { echo "mysql-server: $*" >&2; }
die() {
    log "$*"
    exit 1
}

# The server must not run as root; as a non-root caller it runs as the caller.
if [ "$(id -u)" -eq 0 ]; then
    run_user=mysql
else
    run_user=$(id -un)
fi

ensure_installed() {
    if command -v mariadbd >/dev/null && command -v mariadb-install-db >/dev/null; then
        return
    fi
    [ "$(id -u)" -eq 0 ] || die "mariadb-server is not installed; run: apt-get install -y mariadb-server libmariadb-dev"
    log "installing mariadb-server (Debian package)"
    # Keep the package's post-install from starting the system service: this
    # script never runs or touches any server but its own.
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [ ! -e $policy ]; then
        printf '#!/bin/sh\nexit 101\n' >$policy
        chmod 755 $policy
        made_policy=1
    fi
    local rc=0
    DEBIAN_FRONTEND=noninteractive apt-get install -y mariadb-server libmariadb-dev >&2 || rc=$?
    if [ $rc -ne 0 ]; then
        apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y mariadb-server libmariadb-dev >&2 || rc=$?
    fi
    [ $made_policy -eq 1 ] && rm -f $policy
    command -v mariadbd >/dev/null || die "installing mariadb-server failed"
}

# The pid of the mariadbd this run of the script launched (launch), if any.
launched=

# Print $1 if it is a mariadbd whose command line names our data dir, so
# that a recycled pid is never signalled.
ours() {
    local pid=$1
    case $pid in '' | *[!0-9]*) return 0 ;; esac
    [ -r "/proc/$pid/cmdline" ] || return 0
    local cmdline
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)
    case $cmdline in
    *mariadbd*" --datadir=$data "*) echo "$pid" ;;
    esac
}

# The pid of our server if it is running, else nothing. The pid file is only
# trusted when that process is ours.
server_pid() {
    [ -f "$pidfile" ] || return 0
    ours "$(cat "$pidfile" 2>/dev/null || true)"
}

port_in_use() {
    ss -Hltn "sport = :$1" 2>/dev/null | grep -q . && return 0
    # Fallback when ss prints nothing useful: try to connect.
    (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
    return 1
}

pick_port() {
    local port
    for _ in $(seq 1 200); do
        port=$((20000 + RANDOM % 40000))
        if ! port_in_use "$port"; then
            echo "$port"
            return
        fi
    done
    die "no free port found on 127.0.0.1"
}

random_pw() {
    # 24 characters of [A-Za-z0-9]: safe in URLs and SQL string literals.
    # (head closing the pipe makes tr fail with SIGPIPE: not an error here)
    local pw
    pw=$(LC_ALL=C tr -dc 'A-Za-z0-9' </dev/urandom 2>/dev/null | head -c 24 || true)
    [ ${#pw} -eq 24 ] || die "could not generate a password"
    echo "$pw"
}

# Start mariadbd in the background on $1 and wait until it answers. Returns
# non-zero (with the log shown) when it does not come up.
launch() {
    local port=$1
    mkdir -p "$run"
    chown "$run_user" "$run"
    rm -f "$sock" "$pidfile"
    : >"$errlog"
    chown "$run_user" "$errlog"
    # TLS when start made the certificates (DBPOOL_TEST_TLS=1).
    local tls=()
    if [ -f "$tlsdir/server.crt" ]; then
        tls=(--ssl-ca="$tlsdir/ca.crt" --ssl-cert="$tlsdir/server.crt" --ssl-key="$tlsdir/server.key")
    fi
    mariadbd --no-defaults \
        --user="$run_user" \
        --datadir="$data" \
        --socket="$sock" \
        --pid-file="$pidfile" \
        --port="$port" \
        --bind-address=127.0.0.1 \
        --skip-name-resolve \
        --log-error="$errlog" \
        --innodb-buffer-pool-size=64M \
        --innodb-log-file-size=8M \
        --innodb-use-native-aio=0 \
        --innodb-flush-log-at-trx-commit=2 \
        --performance-schema=OFF \
        --skip-log-bin \
        --max-connections=300 \
        --character-set-server=utf8mb4 \
        --collation-server=utf8mb4_general_ci \
        ${tls[@]+"${tls[@]}"} \
        </dev/null >/dev/null 2>&1 &
    local launcher=$!
    launched=$launcher
    # A deadline, not a count: each ping may itself wait 2 s for a server
    # that accepts but does not answer yet.
    local deadline=$((SECONDS + 60))
    while [ "$SECONDS" -lt "$deadline" ]; do
        # ping exits 0 once the server answers, even with "access denied":
        # no credentials are needed to know it is up.
        if [ -S "$sock" ] && mariadb-admin --no-defaults --socket="$sock" --connect-timeout=2 \
            -u UNKNOWN_USER_PING ping >/dev/null 2>&1; then
            return 0
        fi
        if ! kill -0 "$launcher" 2>/dev/null && [ -z "$(server_pid)" ]; then
            log "mariadbd exited during start-up; its log:"
            tail -n 30 "$errlog" >&2 || true
            return 1
        fi
        sleep 0.1
    done
    log "mariadbd did not become ready within 60 s; its log:"
    tail -n 30 "$errlog" >&2 || true
    # Not left running behind the caller's back.
    kill_launched
    return 1
}

# SIGKILL the mariadbd this run launched, if it still runs. Started in the
# background by a script, it ignores the terminal's SIGINT.
kill_launched() {
    local pid
    pid=$(ours "$launched")
    [ -n "$pid" ] || return 0
    kill -KILL "$pid" 2>/dev/null || true
    wait_gone "$pid" 100 || true
}

# A half-made server is worse than none: unless start gets to the end
# (failure, Ctrl-C), stop what it launched and remove what it made.
undo_failed_start() {
    local rc=$?
    trap - EXIT INT TERM
    if [ "$rc" -ne 0 ]; then
        log "start did not complete; removing the half-made server"
        kill_launched || true
        do_stop || true
    fi
    exit "$rc"
}

sql_root() {
    mariadb --no-defaults --socket="$sock" -u root --batch
}

do_start() {
    ensure_installed
    if [ -n "$(server_pid)" ]; then
        die "a server is already running for $dir (stop it first)"
    fi
    case $dir in
    *[[:space:]]*) die "DIR must not contain white space (mariadb-install-db cannot handle it): $dir" ;;
    esac
    # The EXIT trap alone would see status 0 on Ctrl-C: exit non-zero first.
    trap undo_failed_start EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    mkdir -p "$dir"
    # The unprivileged server must be able to reach DIR (mktemp -d makes 0700).
    if [ "$(id -u)" -eq 0 ]; then
        chmod o+x "$dir"
    fi
    rm -rf "$data" "$run" "$envfile" "$dir/mysql-root.pw" "$tlsdir"
    mkdir -p "$data"
    if [ "${DBPOOL_TEST_TLS:-0}" = 1 ]; then
        "$(dirname -- "$(realpath -- "$0")")/tls-certs.sh" "$tlsdir"
        chown "$run_user" "$tlsdir/server.key"
    fi
    chown "$run_user" "$data"
    log "initialising $data"
    if ! mariadb-install-db --no-defaults --user="$run_user" --datadir="$data" \
        --auth-root-authentication-method=normal --skip-test-db \
        --innodb-log-file-size=8M --innodb-buffer-pool-size=64M --innodb-use-native-aio=0 \
        >"$dir/mysql-install.log" 2>&1; then
        cat "$dir/mysql-install.log" >&2
        die "mariadb-install-db failed"
    fi
    rm -f "$dir/mysql-install.log"

    local port
    for _ in 1 2 3 4 5; do
        port=$(pick_port)
        if launch "$port"; then
            break
        fi
        # Another process may have taken the port between the check and bind.
        if grep -q "Address already in use\|Can't start server: Bind" "$errlog" 2>/dev/null; then
            log "port $port was taken; trying another"
            port=
            continue
        fi
        do_kill_quiet
        die "mariadbd did not start"
    done
    [ -n "$port" ] || die "could not bind a free port after 5 attempts"

    local pw admin_pw root_pw
    pw=$(random_pw)
    admin_pw=$(random_pw)
    root_pw=$(random_pw)
    # Root has no password right after install (auth method "normal"); give
    # every root account one and drop the remote ones.
    sql_root <<SQL
CREATE DATABASE dbpool_test CHARACTER SET utf8mb4;
CREATE USER 'dbpool'@'127.0.0.1' IDENTIFIED BY '$pw';
CREATE USER 'dbpool'@'localhost' IDENTIFIED BY '$pw';
GRANT ALL PRIVILEGES ON dbpool_test.* TO 'dbpool'@'127.0.0.1';
GRANT ALL PRIVILEGES ON dbpool_test.* TO 'dbpool'@'localhost';
CREATE USER 'dbpool_admin'@'127.0.0.1' IDENTIFIED BY '$admin_pw';
CREATE USER 'dbpool_admin'@'localhost' IDENTIFIED BY '$admin_pw';
GRANT ALL PRIVILEGES ON *.* TO 'dbpool_admin'@'127.0.0.1' WITH GRANT OPTION;
GRANT ALL PRIVILEGES ON *.* TO 'dbpool_admin'@'localhost' WITH GRANT OPTION;
DELETE FROM mysql.global_priv WHERE User='root' AND Host <> 'localhost';
DELETE FROM mysql.global_priv WHERE User='';
FLUSH PRIVILEGES;
ALTER USER 'root'@'localhost' IDENTIFIED BY '$root_pw';
SQL
    (umask 077 && echo "$root_pw" >"$dir/mysql-root.pw")

    (
        umask 077
        cat >"$envfile" <<EOF
export DBPOOL_TEST_MYSQL_URL=mysql://dbpool:$pw@127.0.0.1:$port/dbpool_test
export DBPOOL_TEST_MYSQL_ADMIN_URL=mysql://dbpool_admin:$admin_pw@127.0.0.1:$port/dbpool_test
export DBPOOL_TEST_MYSQL_PORT=$port
export DBPOOL_TEST_MYSQL_SOCKET=$(printf %q "$sock")
EOF
        if [ -f "$tlsdir/server.crt" ]; then
            cat >>"$envfile" <<EOF
export DBPOOL_TEST_MYSQL_SSL_CA=$(printf %q "$tlsdir/ca.crt")
export DBPOOL_TEST_MYSQL_SSL_OTHER_CA=$(printf %q "$tlsdir/other-ca.crt")
EOF
        fi
    )
    trap - EXIT INT TERM
    log "MariaDB $(mariadbd --version | sed 's/.*Ver //; s/ .*//') running on 127.0.0.1:$port (pid $(server_pid))"
    cat "$envfile"
}

wait_gone() {
    local pid=$1 tries=$2
    for _ in $(seq 1 "$tries"); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    return 1
}

do_kill_quiet() {
    local pid
    pid=$(server_pid)
    [ -n "$pid" ] || return 0
    kill -KILL "$pid" 2>/dev/null || true
    wait_gone "$pid" 100 || true
}

do_stop() {
    local pid
    pid=$(server_pid)
    if [ -n "$pid" ]; then
        # SIGTERM is mariadbd's clean shutdown.
        kill -TERM "$pid" 2>/dev/null || true
        if ! wait_gone "$pid" 300; then
            log "mariadbd (pid $pid) did not stop in 30 s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
            wait_gone "$pid" 100 || true
        fi
    fi
    rm -rf "$data" "$run" "$envfile" "$dir/mysql-root.pw" "$dir/mysql-install.log" "$tlsdir"
}

do_kill() {
    local pid
    pid=$(server_pid)
    [ -n "$pid" ] || {
        log "no server running for $dir"
        return 0
    }
    kill -KILL "$pid"
    wait_gone "$pid" 100 || die "pid $pid survived SIGKILL"
    rm -f "$pidfile"
}

do_restart() {
    [ -f "$envfile" ] || die "$envfile not found: run '$0 start $dir' first"
    [ -d "$data" ] || die "$data not found: run '$0 start $dir' first"
    local port pid
    port=$(sed -n 's/^export DBPOOL_TEST_MYSQL_PORT=//p' "$envfile")
    [ -n "$port" ] || die "no port in $envfile"
    pid=$(server_pid)
    if [ -n "$pid" ]; then
        kill -TERM "$pid" 2>/dev/null || true
        wait_gone "$pid" 300 || {
            kill -KILL "$pid" 2>/dev/null || true
            wait_gone "$pid" 100 || true
        }
    fi
    if port_in_use "$port"; then
        die "port $port is now used by another process; cannot restart on it"
    fi
    launch "$port" || die "mariadbd did not restart"
    log "restarted on 127.0.0.1:$port (pid $(server_pid))"
}

case $cmd in
start) do_start ;;
stop) do_stop ;;
kill) do_kill ;;
restart) do_restart ;;
*) usage ;;
esac
