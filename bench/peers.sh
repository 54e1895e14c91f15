#!/usr/bin/env bash
# peers.sh — other relays measured with the same client as Sallyport's:
# frp's HTTP and TCP proxies and chisel's reverse TCP tunnel, built from the
# Go module proxy at fixed versions, and Sallyport's own gateway and agent
# (from YAML files, as a user runs them), each driven with `sallyport bench
# --target` and measured with --target-pid: the relay's server where the
# gateway stands, its connector where the agent stands, and the bench
# backend. Every relay starts afresh, with a fresh backend, for the load
# scenarios and again for longpoll, so that no run inherits another's heap.
#
#   bench/peers.sh [OUTDIR]      (make bench-peers; OUTDIR defaults to a temporary one)
#
# Writes OUTDIR/RELAY.load.{md,json} and OUTDIR/RELAY.longpoll.{md,json}
# for RELAY in sallyport, frp-http, frp-tcp, chisel, and prints the tables.
# Linux only (the processes are read from /proc). Loopback only.
#
# Env: SALLYPORT (default bin/sallyport), TRANSPORT (the agent's, default
# grpc as in `sallyport bench`; auto, the agent's own default, uses QUIC
# here), FRP_VERSION (v0.61.1),
# CHISEL_VERSION (v1.10.1), SCENARIOS (small,1k,download,upload), DURATION
# (6s), LONGPOLL (10000), RELAYS (sallyport frp-http frp-tcp chisel),
# PORT_BASE (19000: uses +1 to +9 and +80, +90, +443 on 127.0.0.1).
set -euo pipefail
sallyport=$(realpath "${SALLYPORT:-bin/sallyport}")
transport=${TRANSPORT:-grpc}
frp_version=${FRP_VERSION:-v0.61.1}
chisel_version=${CHISEL_VERSION:-v1.10.1}
base=${PORT_BASE:-19000}
out=${1:-$(mktemp -d)}
mkdir -p "$out"
work=$(mktemp -d)
pids=()
stop_all() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	pids=()
}
trap 'stop_all; rm -rf "$work"' EXIT
trap 'exit 1' INT TERM # so that the EXIT trap stops what was started

# build MODULE VERSION NAME PACKAGE...: builds each package of MODULE at
# VERSION into $work/bin, named after the package's last element (NAME for
# "."), from a writable copy of the module (the module cache is read-only).
build() {
	local module=$1 version=$2 name=$3 dir pkg exe
	shift 3
	dir=$(cd "$work" && go mod download -json "$module@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
	[ -n "$dir" ] || { echo "peers.sh: $module@$version is not served by the module proxy" >&2; exit 1; }
	cp -r "$dir" "$work/$name" && chmod -R u+w "$work/$name"
	for pkg in "$@"; do
		exe=$(basename "$pkg")
		[ "$pkg" != . ] || exe=$name
		(cd "$work/$name" && go build -o "$work/bin/$exe" "$pkg")
	done
}

# status PORT HOST: the status line of GET /bytes/64 through 127.0.0.1:PORT.
status() {
	local line
	exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
	printf 'GET /bytes/64 HTTP/1.0\r\nHost: %s\r\n\r\n' "$2" >&3
	line=$(head -1 <&3)
	exec 3<&-
	echo "$line"
}

# wait_ok PORT HOST LOG: waits up to 30 s for a 200 through the relay.
wait_ok() {
	for _ in $(seq 300); do
		case "$(status "$1" "$2" 2>/dev/null)" in *" 200 "*) return 0 ;; esac
		sleep 0.1
	done
	echo "peers.sh: nothing answers 200 on 127.0.0.1:$1 (Host $2); its log:" >&2
	cat "$3" >&2
	exit 1
}

# start LOG CMD...: starts CMD in the background; its pid is in $started.
start() {
	local log=$1
	shift
	"$@" >"$log" 2>&1 &
	started=$!
	pids+=("$started")
}

backend_port=$((base + 1))
start_backend() {
	start "$work/backend.log" "$sallyport" bench --serve-backend "127.0.0.1:$backend_port"
	backend_pid=$started
	wait_ok "$backend_port" 127.0.0.1 "$work/backend.log"
}

# start_RELAY: starts the relay (after the backend), sets gateway_pid,
# agent_pid, port (where users connect) and host (the Host to send).
start_sallyport() {
	local token=peers-$RANDOM$RANDOM$RANDOM
	rm -rf "$work/gw" "$work/agent"
	cat >"$work/gateway.yaml" <<YAML
public: {addr: "127.0.0.1:$((base + 80))"}
tunnel:
  addr: "127.0.0.1:$((base + 443))"
  tokens: [{token: "$token", group: default}]
admin: {addr: "127.0.0.1:$((base + 90))"}
data_dir: $work/gw
shutdown_grace: 1s
apps:
  - {name: bench, hosts: ["app.test"], backend: "http://127.0.0.1:$backend_port", group: default}
YAML
	start "$work/gateway.log" "$sallyport" gateway --config "$work/gateway.yaml"
	gateway_pid=$started
	for _ in $(seq 300); do [ -s "$work/gw/tunnel-cert.pem" ] && break; sleep 0.1; done
	cat >"$work/agent.yaml" <<YAML
gateway: 127.0.0.1:$((base + 443))
gateway_ca_file: $work/gw/tunnel-cert.pem
token: "$token"
data_dir: $work/agent
name: peers
connections: 2
transport: $transport
allow: ["127.0.0.1:$backend_port"]
YAML
	start "$work/agent.log" "$sallyport" agent --config "$work/agent.yaml"
	agent_pid=$started
	port=$((base + 80)) host=app.test
	wait_ok "$port" "$host" "$work/agent.log"
}

frp_config() {
	cat >"$work/frps.toml" <<TOML
bindAddr = "127.0.0.1"
bindPort = $((base + 2))
vhostHTTPPort = $((base + 3))
log.level = "warn"
TOML
	cat >"$work/frpc.toml" <<TOML
serverAddr = "127.0.0.1"
serverPort = $((base + 2))
log.level = "warn"
[[proxies]]
name = "http"
type = "http"
localIP = "127.0.0.1"
localPort = $backend_port
customDomains = ["app.test"]
[[proxies]]
name = "tcp"
type = "tcp"
localIP = "127.0.0.1"
localPort = $backend_port
remotePort = $((base + 4))
TOML
	start "$work/frps.log" "$work/bin/frps" -c "$work/frps.toml"
	gateway_pid=$started
	sleep 0.2
	start "$work/frpc.log" "$work/bin/frpc" -c "$work/frpc.toml"
	agent_pid=$started
}
start_frp-http() {
	frp_config
	port=$((base + 3)) host=app.test
	wait_ok "$port" "$host" "$work/frpc.log"
}
start_frp-tcp() {
	frp_config
	port=$((base + 4)) host=127.0.0.1
	wait_ok "$port" "$host" "$work/frpc.log"
}
start_chisel() {
	start "$work/chisel-server.log" "$work/bin/chisel" server --host 127.0.0.1 --port $((base + 5)) --reverse
	gateway_pid=$started
	sleep 0.2
	start "$work/chisel-client.log" "$work/bin/chisel" client "http://127.0.0.1:$((base + 5))" \
		"R:127.0.0.1:$((base + 6)):127.0.0.1:$backend_port"
	agent_pid=$started
	port=$((base + 6)) host=127.0.0.1
	wait_ok "$port" "$host" "$work/chisel-client.log"
}

relays=${RELAYS:-sallyport frp-http frp-tcp chisel}
case " $relays " in *" frp-"*)
	build github.com/fatedier/frp "$frp_version" frp ./cmd/frps ./cmd/frpc ;;
esac
case " $relays " in *" chisel "*)
	build github.com/jpillora/chisel "$chisel_version" chisel . ;;
esac

for relay in $relays; do
	for phase in load longpoll; do
		start_backend
		"start_$relay"
		if [ "$phase" = load ]; then
			scenarios=(--scenarios "${SCENARIOS:-small,1k,download,upload}" --duration "${DURATION:-6s}")
		else
			scenarios=(--scenarios longpoll --longpoll "${LONGPOLL:-10000}")
		fi
		"$sallyport" bench --target "http://127.0.0.1:$port" --host "$host" \
			--direct-target "http://127.0.0.1:$backend_port" \
			--target-pid "gateway=$gateway_pid" --target-pid "agent=$agent_pid" --target-pid "backend=$backend_pid" \
			"${scenarios[@]}" --json "$out/$relay.$phase.json" >"$out/$relay.$phase.md"
		stop_all
		echo "## $relay, $phase"
		echo
		cat "$out/$relay.$phase.md"
		echo
	done
done
echo "peers.sh: tables and JSON in $out"
