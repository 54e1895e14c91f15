#!/usr/bin/env bash
# idle-rss.sh — resident memory of an idle agent with 2 sessions, for each
# agent binary and transport given: a real `gateway` and `agent` from YAML
# files on 127.0.0.1, one GET relayed, then VmRSS, RssAnon and RssFile of
# the agent from /proc after it has rested for REST seconds.
#
#   bench/idle-rss.sh [AGENT_BINARY...]     (make idle-rss: both builds)
#
# Env: GATEWAY (default bin/sallyport), TRANSPORTS (default "grpc quic
# yamux"), REST (default 3), PORT_BASE (default 18000: uses +80, +443,
# +90 and +1 on 127.0.0.1), METRICS (set: each agent serves metrics_addr
# on +100+N and /metrics is scraped once before the measure).
set -euo pipefail
gateway=${GATEWAY:-bin/sallyport}
agents=("$@")
[ ${#agents[@]} -gt 0 ] || agents=(bin/sallyport bin/sallyport-agent)
base=${PORT_BASE:-18000}
dir=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$dir"
}
trap cleanup EXIT
token=idle-rss-$RANDOM$RANDOM$RANDOM$RANDOM
cat >"$dir/gateway.yaml" <<YAML
public: {addr: "127.0.0.1:$((base + 80))"}
tunnel:
  addr: "127.0.0.1:$((base + 443))"
  tokens: [{token: "$token", group: default}]
admin: {addr: "127.0.0.1:$((base + 90))"}
data_dir: $dir/gw
shutdown_grace: 1s
apps:
  - {name: hello, hosts: ["127.0.0.1"], backend: "http://127.0.0.1:$((base + 1))", group: default}
YAML
"$gateway" bench --serve-backend "127.0.0.1:$((base + 1))" >/dev/null 2>&1 &
pids+=($!)
"$gateway" gateway --config "$dir/gateway.yaml" >"$dir/gateway.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -s "$dir/gw/tunnel-cert.pem" ] && break; sleep 0.1; done
[ -s "$dir/gw/tunnel-cert.pem" ] || { cat "$dir/gateway.log" >&2; exit 1; }

printf '| agent binary | transport | VmRSS KiB | RssAnon KiB | RssFile KiB |\n|---|---|--:|--:|--:|\n'
n=0
for bin in "${agents[@]}"; do
	for transport in ${TRANSPORTS:-grpc quic yamux}; do
		n=$((n + 1))
		cat >"$dir/agent$n.yaml" <<YAML
gateway: 127.0.0.1:$((base + 443))
gateway_ca_file: $dir/gw/tunnel-cert.pem
token: "$token"
data_dir: $dir/agent$n
name: idle-$n
transport: $transport
connections: 2
allow: ["127.0.0.1:$((base + 1))"]
YAML
		maddr=127.0.0.1:$((base + 100 + n))
		[ -z "${METRICS:-}" ] || echo "metrics_addr: $maddr" >>"$dir/agent$n.yaml"
		"$bin" agent --config "$dir/agent$n.yaml" >"$dir/agent$n.log" 2>&1 &
		pid=$!
		for _ in $(seq 100); do
			[ "$(grep -c 'connected to the gateway' "$dir/agent$n.log")" -ge 2 ] && break
			sleep 0.1
		done
		[ "$(grep -c 'connected to the gateway' "$dir/agent$n.log")" -ge 2 ] || { cat "$dir/agent$n.log" >&2; exit 1; }
		exec 3<>"/dev/tcp/127.0.0.1/$((base + 80))"
		printf 'GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
		status=$(head -1 <&3)
		exec 3<&-
		case "$status" in *" 200 "*) ;; *) echo "relayed GET: $status" >&2; exit 1 ;; esac
		if [ -n "${METRICS:-}" ]; then
			exec 3<>"/dev/tcp/${maddr%:*}/${maddr#*:}"
			printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3
			grep -q '^sallyport_agent_sessions{transport=' <&3 || { echo "no agent metrics at $maddr" >&2; exit 1; }
			exec 3<&-
		fi
		sleep "${REST:-3}"
		awk -v b="$bin" -v t="$transport" '/^VmRSS/{v=$2} /^RssAnon/{a=$2} /^RssFile/{f=$2} END{printf "| %s | %s | %d | %d | %d |\n", b, t, v, a, f}' "/proc/$pid/status"
		kill "$pid"
		wait "$pid" 2>/dev/null || true
	done
done
