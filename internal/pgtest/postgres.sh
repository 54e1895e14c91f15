#!/usr/bin/env bash
# postgres.sh start|stop — a throwaway PostgreSQL server for the tests
# (make postgres, make postgres-stop).
#
# start installs Debian's postgresql when its programs are missing (needs
# root, as CI has), creates a cluster in a temporary directory, starts it
# on 127.0.0.1 and a free port, and writes its DSN to $DSN_FILE (make test
# passes it to the tests as SALLYPORT_TEST_POSTGRES). PostgreSQL refuses to
# run as root: as root the cluster belongs to the `postgres` user that the
# package creates. The cluster trusts local connections, runs without
# fsync and is for tests only. A server this script started and that still
# answers is reused.
set -euo pipefail
DSN_FILE=${DSN_FILE:-bin/postgres.dsn}
STATE=${SALLYPORT_PG_STATE:-${TMPDIR:-/tmp}/sallyport-test-postgres}

pgbin() {
	local d
	for d in /usr/lib/postgresql/*/bin; do
		[ -x "$d/pg_ctl" ] && { echo "$d"; return 0; }
	done
	return 1
}

as_owner() {
	if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

stop() {
	local bin
	if [ -f "$STATE/dir" ] && bin=$(pgbin); then
		as_owner "$bin/pg_ctl" -D "$(cat "$STATE/dir")/data" -m immediate stop >/dev/null 2>&1 || true
		rm -rf "$(cat "$STATE/dir")"
	fi
	rm -rf "$STATE"
	rm -f "$DSN_FILE"
}

start() {
	local bin dir port p
	if ! bin=$(pgbin); then
		echo "postgres: installing Debian's postgresql for the store tests"
		export DEBIAN_FRONTEND=noninteractive
		apt-get install -y postgresql || { apt-get update && apt-get install -y postgresql; }
		bin=$(pgbin)
	fi
	if [ -f "$STATE/dsn" ] && [ -f "$STATE/dir" ] &&
		as_owner "$bin/pg_ctl" -D "$(cat "$STATE/dir")/data" status >/dev/null 2>&1; then
		mkdir -p "$(dirname "$DSN_FILE")"
		cp "$STATE/dsn" "$DSN_FILE"
		echo "postgres: already running: $(cat "$DSN_FILE") (written to $DSN_FILE)"
		return
	fi
	stop
	mkdir -p "$STATE"
	dir=$(mktemp -d "${TMPDIR:-/tmp}/sallyport-pg.XXXXXX")
	echo "$dir" >"$STATE/dir"
	chmod 755 "$dir"
	[ "$(id -u)" = 0 ] && chown postgres: "$dir"
	as_owner "$bin/initdb" -D "$dir/data" -U sallyport -A trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 ||
		{ cat "$dir/initdb.log"; exit 1; }
	# A free port: one that refuses a connection now. Another process may
	# take it before the server does; then the next one is tried. Below
	# the ephemeral range (Linux: 32768 and up): while a server on such a
	# port is down, a client dialling it on loopback can be given that
	# same port as its own and connect to itself, which then keeps the
	# server from binding when it comes back.
	for _ in $(seq 20); do
		port=$((20000 + RANDOM % 12000))
		if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then continue; fi
		if as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 start \
			-o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" >/dev/null; then
			p=$port
			break
		fi
	done
	if [ -z "${p:-}" ]; then
		echo "postgres: the server did not start; its log:" >&2
		cat "$dir/server.log" >&2 || true
		exit 1
	fi
	echo "postgres://sallyport@127.0.0.1:$p/postgres?sslmode=disable" >"$STATE/dsn"
	mkdir -p "$(dirname "$DSN_FILE")"
	cp "$STATE/dsn" "$DSN_FILE"
	echo "postgres: $(cat "$DSN_FILE") (written to $DSN_FILE; make test passes it as SALLYPORT_TEST_POSTGRES)"
}

case "${1:-start}" in
start) start ;;
stop) stop ;;
*) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
