# Sallyport — build, test and code generation. Needs only Go: every tool runs
# through `go run module@version`, so a fresh machine needs no downloads by hand.

GO        ?= go
BUF       := $(GO) run github.com/bufbuild/buf/cmd/buf@v1.75.0
BIN       := bin/sallyport
PKGS      := ./...
FUZZTIME  ?= 0

# VERSION is what `sallyport version` prints for make build and make dist:
# git describe of the checkout (the last tag, else the commit; -dirty with
# uncommitted changes). Without git, or outside a checkout, it is empty and
# no -X is given: the binary then prints the version Go recorded (the
# commit, when go build could read it), else "dev". make VERSION=v1.2.3
# sets it by hand.
ifeq ($(origin VERSION),undefined)
VERSION := $(shell git describe --tags --always --dirty 2>/dev/null)
endif
LDFLAGS   := $(if $(VERSION),-ldflags "-X main.version=$(VERSION)")

# TAGS are the build tags of both builds, AGENT_TAGS the agent-only build's.
# grpcnotrace leaves out gRPC's request tracing (golang.org/x/net/trace and
# its /debug/requests pages, which Sallyport never turns on) and with it
# html/template: a template that can be executed lets reflection call any
# exported method by name, so the linker keeps every exported method of
# every type in the binary. Without it the agent-only build is 21.6 MB
# instead of 26.6 and an idle agent about 2.4 MiB smaller (README, Memory);
# Sallyport's own pages are written without templates (internal/htmlpage)
# for the same reason; internal/deptest's TestBuildsPruneMethods keeps
# both builds so.
TAGS       := grpcnotrace
AGENT_TAGS := agentonly,$(TAGS)

.PHONY: all build dist cross idle-rss bench-peers demo test test32 test-short generate checkgenerate lint fmt bench fuzz clean chromium postgres postgres-stop

all: build

# The binary is static (no cgo): the C library is not linked for DNS and
# user lookups (Go's own are used), which also keeps its pages out of every
# process: 1.6 MB less resident for an idle agent. `go test -race` still
# uses cgo; only the binary is built without it.
#
# bin/sallyport-agent is the agent-only build of the same command
# (-tags agentonly): the agent, `agent enroll` and `version`, without the
# gateway, its embedded SQLite and PostgreSQL driver, pre-authentication,
# demo and bench. It is 21 MB smaller and an idle agent maps 7 MiB less (see README, Memory).
build:
	CGO_ENABLED=0 $(GO) build $(LDFLAGS) -tags $(TAGS) -o $(BIN) ./cmd/sallyport
	CGO_ENABLED=0 $(GO) build $(LDFLAGS) -tags $(AGENT_TAGS) -o $(BIN)-agent ./cmd/sallyport

# dist cross-compiles both builds, static and without local paths, for the
# platforms people run gateways and (mostly) agents on: servers, ARM boards
# at the edge (arm64, 32-bit ARMv7 such as the Raspberry Pi 2 and 3 in
# 32-bit mode, and ARMv6: Pi Zero, Zero W, Pi 1, which stop with an illegal
# instruction in an ARMv7 build), Windows and macOS. Binaries land in dist/
# as sallyport[-agent]-OS-ARCH; linux/armv6 is GOARCH=arm GOARM=6.
DIST_PLATFORMS := linux/amd64 linux/arm64 linux/arm linux/armv6 windows/amd64 darwin/arm64
dist:
	set -e; for p in $(DIST_PLATFORMS); do os=$${p%/*}; arch=$${p#*/}; \
		goarch=$$arch; goarm=7; [ $$arch = armv6 ] && goarch=arm && goarm=6; \
		ext=; [ $$os = windows ] && ext=.exe; \
		echo "== $$os/$$arch"; \
		CGO_ENABLED=0 GOOS=$$os GOARCH=$$goarch GOARM=$$goarm $(GO) build -trimpath $(LDFLAGS) -tags $(TAGS) -o dist/sallyport-$$os-$$arch$$ext ./cmd/sallyport; \
		CGO_ENABLED=0 GOOS=$$os GOARCH=$$goarch GOARM=$$goarm $(GO) build -trimpath $(LDFLAGS) -tags $(AGENT_TAGS) -o dist/sallyport-agent-$$os-$$arch$$ext ./cmd/sallyport; \
	done

# cross checks that the agent-only build compiles for a 32-bit ARM board
# (where an int is 32 bits) and for Windows (no Unix system calls) without
# writing binaries, and vets every package and its tests for Windows (the
# gateway ships for Windows too, and test files there once used Unix-only
# system calls); make test runs it (make dist builds every platform;
# checking two keeps make test quick).
CROSS_PLATFORMS := linux/arm windows/amd64
cross:
	set -e; for p in $(CROSS_PLATFORMS); do os=$${p%/*}; arch=$${p#*/}; \
		echo "== agent-only build for $$os/$$arch"; \
		CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch GOARM=7 $(GO) build -tags $(AGENT_TAGS) -o /dev/null ./cmd/sallyport; \
	done
	@echo "== go vet for windows/amd64"
	CGO_ENABLED=0 GOOS=windows GOARCH=amd64 $(GO) vet $(PKGS)

# Idle resident memory of the agent (2 sessions), both builds, each transport.
idle-rss: build
	bench/idle-rss.sh

# Other relays (frp, chisel) and Sallyport's own gateway and agent measured
# with the same client through --target (bench/peers.sh; about 8 minutes).
bench-peers: build
	bench/peers.sh

demo: build
	./$(BIN) demo

# test = vet + the whole suite under the race detector (fuzz seed corpora
# run as ordinary tests; the end-to-end suite over gRPC, plus the
# transport, proxy and auto-fallback tests over QUIC and yamux), then the
# 1 GiB transfers over gRPC without the detector (under it they run with
# 128 MiB, since it relays only ~25 MiB/s), then the whole end-to-end suite
# again over QUIC and over yamux without the detector (1 GiB transfers
# included): under it, each of those runs would take three minutes more.
# Last, the allocation budgets without the detector (it adds allocations)
# and the gateway's differential path tests whole (one goroutine, nothing
# for the detector to find: under it they run a tenth of their cases),
# internal/rawsock's tests again without it (its build under the detector
# makes package syscall's calls instead of raw ones),
# and the command tests of the agent-only build (-tags agentonly), which
# nothing else compiles.
# TestDeadPeerNoticed waits ~25 s for real keepalives, on every transport
# at once, TestKeepaliveConfigured ~10 s for configured ones and
# TestKeepaliveSaturatedLink ~45 s and TestKeepaliveOneWayLink ~17 s a case
# for slow links, in the first pass
# (-parallel 7: their subtests, and the per-transport cases of the tests
# that wait on an app timeout, a backoff, an idle timeout or a store sweep,
# are the parallel tests, all waiting on timers or a paced relay, and a
# 2-core machine would otherwise run two at a time; -parallel 24 saved
# only 12 s more of the package's 147 s); the passes over QUIC and yamux leave them
# out, since the first covered every transport, and so the TestQUIC tests
# of lossy paths, which run over QUIC in any pass.
E2E_TRANSPORTS := quic yamux
test:
	$(GO) vet $(PKGS)
	$(GO) test -race -count=1 -timeout 8m -parallel 7 $(PKGS)
	$(GO) test -count=1 -timeout 5m -run '^TestBody' ./internal/e2e/
	set -e; for t in $(E2E_TRANSPORTS); do \
		echo "== end-to-end suite over $$t"; \
		SALLYPORT_TEST_TRANSPORT=$$t $(GO) test -count=1 -timeout 8m -skip '^(TestDeadPeerNoticed|TestKeepaliveConfigured|TestKeepaliveSaturatedLink|TestKeepaliveOneWayLink|TestQUIC.*)$$' ./internal/e2e/; \
	done
	$(GO) test -count=1 -run 'Allocs$$|SameAnswers$$' ./tunnel/... ./agent/ ./gateway/
	$(GO) test -count=1 ./internal/rawsock/
	$(GO) test -count=1 -tags $(AGENT_TAGS) ./cmd/sallyport/
	$(MAKE) --no-print-directory test32
	$(MAKE) --no-print-directory cross

# test32 runs the tests of the packages the agent-only build links (the
# list comes from go list, so it follows the imports) as 32-bit programs:
# GOARCH=386 runs natively on x86-64 Linux, and an int is 32 bits there as
# on the ARMv7 boards agents run on, where 64-bit atomics must also be
# 8-byte aligned. Bodies above 2 and 4 GiB are checked at the function
# level (biglength_test.go), which can fail only here. No race detector
# on 386. About 8 s with a warm cache, a minute on a fresh machine (the
# standard library and dependencies compile for 386 once).
AGENT_PKGS = $(shell $(GO) list -deps -tags $(AGENT_TAGS) ./cmd/sallyport | grep '^github.com/sallyport/sallyport/' | grep -v '/cmd/')
test32:
	CGO_ENABLED=0 GOARCH=386 $(GO) test -count=1 -timeout 5m $(AGENT_PKGS)

# postgres starts a throwaway PostgreSQL server for the tests of the
# PostgreSQL store (internal/store, cmd/sallyport, the two-replica
# end-to-end test): it installs Debian's postgresql when missing (needs
# root, as CI has), creates a cluster in a temporary directory owned by the
# `postgres` user, starts it on 127.0.0.1 and a free port, and writes its
# DSN to bin/postgres.dsn, which make test passes to the tests as
# SALLYPORT_TEST_POSTGRES. Without it those tests skip, except under
# CI=true, where they fail. postgres-stop stops it and removes its files.
PG_DSN_FILE := bin/postgres.dsn
SALLYPORT_TEST_POSTGRES ?= $(shell cat $(PG_DSN_FILE) 2>/dev/null)
export SALLYPORT_TEST_POSTGRES
postgres:
	@DSN_FILE=$(PG_DSN_FILE) internal/pgtest/postgres.sh start

postgres-stop:
	@DSN_FILE=$(PG_DSN_FILE) internal/pgtest/postgres.sh stop

# chromium installs Debian's chromium for the browser test (cmd/sallyport
# TestDemoBrowserSignIn) when it is missing. Needs root (CI runs as root);
# under CI=true the test fails without it instead of skipping.
chromium:
	@if command -v chromium >/dev/null 2>&1; then echo "chromium: $$(command -v chromium)"; else \
		echo "installing Debian's chromium for the browser test"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y chromium || { apt-get update && apt-get install -y chromium; }; \
	fi

test-short:
	$(GO) test -short -count=1 $(PKGS)

generate:
	$(BUF) lint
	$(BUF) generate

# checkgenerate fails when the committed generated code differs from what
# `make generate` produces.
checkgenerate: generate
	@if [ -n "$$(git status --porcelain -- proto)" ]; then \
		echo "generated code is stale; run 'make generate' and commit:"; \
		git status --porcelain -- proto; git --no-pager diff --stat -- proto; exit 1; \
	fi

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(BUF) lint

fmt:
	gofmt -w $$(git ls-files '*.go')

# fuzz runs each fuzzer for FUZZTIME (e.g. make fuzz FUZZTIME=60s), one
# after another: the tunnel-message decoder, then the agent's HTTP/1.1
# client against net/http (its head parser alone; one response; two on one
# connection; against http.Transport itself over loopback), and the guard
# that ends an HTTP/1.0 connection for http.Transport (the same answers with
# and without it), and the escaping of the hand-written HTML pages against
# html/template's.
FUZZFOR := $(if $(filter 0,$(FUZZTIME)),30s,$(FUZZTIME))
fuzz:
	$(GO) test ./tunnel -run '^$$' -fuzz '^FuzzDecodeFrame$$' -fuzztime $(FUZZFOR)
	$(GO) test ./agent -run '^$$' -fuzz '^FuzzPeekHead$$' -fuzztime $(FUZZFOR)
	$(GO) test ./agent -run '^$$' -fuzz '^FuzzH1Response$$' -fuzztime $(FUZZFOR)
	$(GO) test ./agent -run '^$$' -fuzz '^FuzzH1Reuse$$' -fuzztime $(FUZZFOR)
	$(GO) test ./agent -run '^$$' -fuzz '^FuzzH1Transport$$' -fuzztime $(FUZZFOR)
	$(GO) test ./agent -run '^$$' -fuzz '^FuzzH10Guard$$' -fuzztime $(FUZZFOR)
	$(GO) test ./internal/htmlpage -run '^$$' -fuzz '^FuzzAsTemplate$$' -fuzztime $(FUZZFOR)

bench: build
	./$(BIN) bench

clean:
	rm -rf bin dist
