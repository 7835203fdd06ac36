#!/usr/bin/env bash
# pg-server.sh — a throw-away PostgreSQL 15 server for dbpool's tests.
#
#   scripts/pg-server.sh start   DIR   initdb in DIR/pg, start, write DIR/pg.env
#   scripts/pg-server.sh stop    DIR   stop (fast, else immediate) and remove DIR/pg*
#   scripts/pg-server.sh kill    DIR   stop -m immediate, keep the data (restart tests)
#   scripts/pg-server.sh restart DIR   start the existing data again, same port
#   scripts/pg-server.sh status  DIR   exit 0 if running
#
# The server listens on 127.0.0.1 on a free port and on a unix socket in
# DIR/pg-sock, requires scram-sha-256 passwords everywhere, and runs as the
# unprivileged user $DBPOOL_PG_USER (created if missing; PostgreSQL refuses
# to run as root). Only the server whose data directory is DIR/pg is ever
# touched. `source DIR/pg.env` sets DBPOOL_TEST_PG_URL and friends.
#
# With DBPOOL_TEST_TLS=1 at start, the server also takes TLS (ssl = on) with
# a throw-away CA and certificate for localhost/127.0.0.1 made in DIR/pg-tls
# (scripts/tls-certs.sh); pg.env then also names DBPOOL_TEST_PG_SSL_CA (that
# CA), DBPOOL_TEST_PG_SSL_OTHER_CA (an unrelated one) and
# DBPOOL_TEST_PG_CERT_URL (the role dbpool_cert, which logs in over TLS
# with the client certificate DIR/pg-tls/client.crt, no password). Restart
# keeps it.
set -euo pipefail

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
RUN_USER=${DBPOOL_PG_USER:-dbpooltest}

die() {
    echo "pg-server.sh: $*" >&2
    exit 1
}

usage() {
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

[[ $# -eq 2 ]] || usage
cmd=$1
DIR=$(realpath -m -- "$2")
DATA=$DIR/pg
SOCK=$DIR/pg-sock
LOG=$DIR/pg.log
ENVFILE=$DIR/pg.env
TLSDIR=$DIR/pg-tls
TLS=${DBPOOL_TEST_TLS:-0}

[[ -x $PG_BIN/pg_ctl ]] || die "PostgreSQL 15 not found in $PG_BIN (apt-get install postgresql-15, or set PG_BIN)"

is_root() { [[ $(id -u) -eq 0 ]]; }

# Run a server command as the unprivileged user; from a directory it can
# enter, or initdb and pg_ctl complain about the working directory.
as_pg() {
    if is_root; then
        (cd / && runuser -u "$RUN_USER" -- "$@")
    else
        (cd / && "$@")
    fi
}

ensure_user() {
    is_root || return 0
    if ! id -u "$RUN_USER" >/dev/null 2>&1; then
        useradd --system --user-group --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin "$RUN_USER"
    fi
}

is_running() {
    [[ -f $DATA/PG_VERSION ]] || return 1
    as_pg "$PG_BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1
}

random_password() {
    # 32 hex digits: URL-safe, and od reads exactly what it needs (no SIGPIPE).
    od -An -tx1 -N16 /dev/urandom | tr -d ' \n'
}

free_port() {
    local py
    for py in /usr/bin/python3 python3; do
        if command -v "$py" >/dev/null 2>&1; then
            "$py" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])' && return 0
        fi
    done
    local p
    for _ in $(seq 1 200); do
        p=$((20000 + RANDOM % 40000))
        if [[ -z $(ss -Htan "sport = :$p") ]]; then
            echo "$p"
            return 0
        fi
    done
    die "no free TCP port found"
}

print_env() {
    [[ -f $ENVFILE ]] || die "$ENVFILE missing"
    cat "$ENVFILE"
}

conf_port() {
    sed -n 's/^port = \([0-9]*\).*/\1/p' "$DATA/postgresql.conf" | tail -n 1
}

start_server() {
    # -w waits until the server accepts connections; the log says why not.
    if ! as_pg "$PG_BIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 start >/dev/null; then
        echo "pg-server.sh: server did not start; last lines of $LOG:" >&2
        tail -n 20 "$LOG" >&2 || true
        return 1
    fi
    local port
    port=$(conf_port)
    local deadline=$((SECONDS + 10))
    while [ "$SECONDS" -lt "$deadline" ]; do
        if "$PG_BIN/pg_isready" -q -t 2 -h 127.0.0.1 -p "$port" -d postgres; then
            return 0
        fi
        sleep 0.1
    done
    die "server started but does not answer on 127.0.0.1:$port"
}

undo_failed_start() {
    local rc=$?
    if [[ $rc -ne 0 ]]; then
        cmd_stop
    fi
    exit "$rc"
}

cmd_start() {
    if is_running; then
        print_env
        return 0
    fi
    [[ ! -e $DATA ]] || die "$DATA exists but no server runs there: use 'restart' or 'stop' first"
    # The paths go into postgresql.conf between single quotes.
    [[ $DIR != *\'* ]] || die "DIR must not contain a single quote: $DIR"
    # A half-made server is worse than none: undo everything unless start
    # gets to the end, also on Ctrl-C (the EXIT trap alone would see status
    # 0 then, and pg_ctl runs the server in a session of its own, out of
    # reach of the terminal's SIGINT).
    trap undo_failed_start EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    ensure_user
    mkdir -p "$DIR"
    chmod 755 "$DIR"
    if is_root; then
        as_pg test -x "$DIR" || die "$RUN_USER cannot enter $DIR (a parent directory is private); use a directory under /tmp"
    fi
    install -d -m 700 "$DATA"
    install -d -m 755 "$SOCK"
    : >"$LOG"
    if is_root; then
        chown "$RUN_USER:" "$DATA" "$SOCK" "$LOG"
    fi

    local su_pw user_pw pwfile
    su_pw=$(random_password)
    user_pw=$(random_password)
    pwfile=$DIR/pg.initdb-pw
    (umask 077 && printf '%s\n' "$su_pw" >"$pwfile")
    if is_root; then
        chown "$RUN_USER:" "$pwfile"
    fi
    if ! as_pg "$PG_BIN/initdb" -D "$DATA" -U postgres --pwfile="$pwfile" \
        --auth=scram-sha-256 -E UTF8 --locale=C.UTF-8 --no-sync >"$DIR/pg.initdb.log" 2>&1; then
        cat "$DIR/pg.initdb.log" >&2
        rm -f "$pwfile"
        die "initdb failed"
    fi
    rm -f "$pwfile" "$DIR/pg.initdb.log"

    # Password authentication for every connection, socket included.
    cat >"$DATA/pg_hba.conf" <<'EOF'
# TYPE  DATABASE  USER  ADDRESS        METHOD
local   all       all                  scram-sha-256
host    all       all   127.0.0.1/32   scram-sha-256
EOF

    local tls_conf=""
    if [[ $TLS == 1 ]]; then
        "$(dirname -- "$(realpath -- "$0")")/tls-certs.sh" "$TLSDIR"
        if is_root; then
            chown "$RUN_USER:" "$TLSDIR/server.key"
        fi
        tls_conf="ssl = on
ssl_cert_file = '$TLSDIR/server.crt'
ssl_key_file = '$TLSDIR/server.key'
ssl_ca_file = '$TLSDIR/ca.crt'"
        # One more role, dbpool_cert, that logs in with the client
        # certificate (CN dbpool) instead of a password, over TLS only.
        sed -i 's|^host    all       all   127.0.0.1/32   scram-sha-256$|hostssl all       dbpool_cert 127.0.0.1/32 cert map=dbpool_cert\n&|' \
            "$DATA/pg_hba.conf"
        echo "dbpool_cert dbpool dbpool_cert" >>"$DATA/pg_ident.conf"
    fi

    local attempt port
    for attempt in 1 2 3 4 5; do
        port=$(free_port)
        cat >>"$DATA/postgresql.conf" <<EOF

# --- dbpool test server (scripts/pg-server.sh) ---
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$SOCK'
max_connections = 300
password_encryption = 'scram-sha-256'
# English messages: the driver classifies connect errors by their text.
lc_messages = 'C'
# A test server: durability is not needed, speed is.
fsync = off
synchronous_commit = off
full_page_writes = off
$tls_conf
EOF
        if start_server; then
            break
        fi
        # Most likely someone took the port between the probe and the bind.
        [[ $attempt -lt 5 ]] || die "could not start the server (see $LOG)"
    done

    PGPASSWORD=$su_pw "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -p "$port" \
        -U postgres -d postgres >/dev/null <<EOF
CREATE ROLE dbpool LOGIN PASSWORD '$user_pw';
CREATE DATABASE dbpool_test OWNER dbpool;
$([[ $TLS == 1 ]] && echo "CREATE ROLE dbpool_cert LOGIN;")
EOF

    (
        umask 077
        cat >"$ENVFILE" <<EOF
export DBPOOL_TEST_PG_URL=postgresql://dbpool:$user_pw@127.0.0.1:$port/dbpool_test
export DBPOOL_TEST_PG_ADMIN_URL=postgresql://postgres:$su_pw@127.0.0.1:$port/dbpool_test
export DBPOOL_TEST_PG_PORT=$port
export DBPOOL_TEST_PG_SOCKET_DIR=$(printf %q "$SOCK")
export DBPOOL_TEST_PG_DATA=$(printf %q "$DATA")
export DBPOOL_TEST_PG_DIR=$(printf %q "$DIR")
EOF
        if [[ $TLS == 1 ]]; then
            cat >>"$ENVFILE" <<EOF
export DBPOOL_TEST_PG_SSL_CA=$(printf %q "$TLSDIR/ca.crt")
export DBPOOL_TEST_PG_SSL_OTHER_CA=$(printf %q "$TLSDIR/other-ca.crt")
export DBPOOL_TEST_PG_CERT_URL=postgresql://dbpool_cert@127.0.0.1:$port/dbpool_test
EOF
        fi
    )
    trap - EXIT INT TERM
    print_env
}

stop_server() {
    local mode=$1
    [[ -f $DATA/PG_VERSION ]] || return 0
    is_running || return 0
    if [[ $mode == fast ]]; then
        as_pg "$PG_BIN/pg_ctl" -D "$DATA" -m fast -w -t 30 stop >/dev/null && return 0
        echo "pg-server.sh: fast shutdown failed, shutting down immediately" >&2
    fi
    as_pg "$PG_BIN/pg_ctl" -D "$DATA" -m immediate -w -t 30 stop >/dev/null
}

cmd_stop() {
    stop_server fast
    # Only what start created; never a glob that could match the caller's files.
    rm -rf -- "$DATA" "$SOCK" "$LOG" "$ENVFILE" "$DIR/pg.initdb.log" "$DIR/pg.initdb-pw" "$TLSDIR"
}

cmd_kill() {
    stop_server immediate
}

cmd_restart() {
    [[ -f $DATA/PG_VERSION ]] || die "no data directory in $DATA: use 'start'"
    if is_running; then
        return 0
    fi
    start_server || die "could not restart the server (see $LOG)"
}

case $cmd in
start) cmd_start ;;
stop) cmd_stop ;;
kill) cmd_kill ;;
restart) cmd_restart ;;
status) is_running ;;
*) usage ;;
esac
