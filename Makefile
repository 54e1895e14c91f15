# Sallyport — build, test and code generation. Needs only Go: every tool runs
# through `go run module@version`, so a fresh machine needs no downloads by hand.

GO        ?= go
BUF       := $(GO) run github.com/bufbuild/buf/cmd/buf@v1.75.0
BIN       := bin/sallyport
PKGS      := ./...
FUZZTIME  ?= 0

.PHONY: all build demo test test-short generate checkgenerate lint fmt bench fuzz clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/sallyport

demo: build
	./$(BIN) demo

# test = vet + the whole suite under the race detector (fuzz seed corpora
# run as ordinary tests; the end-to-end suite over gRPC), then the
# end-to-end suite again over QUIC and over yamux, then the 1 GiB transfers
# without the detector over each transport: under -race they run with
# 128 MiB, since the detector relays only ~25 MiB/s.
E2E_TRANSPORTS := quic yamux
test:
	$(GO) vet $(PKGS)
	$(GO) test -race -count=1 -timeout 8m $(PKGS)
	set -e; for t in $(E2E_TRANSPORTS); do \
		echo "== end-to-end suite over $$t"; \
		SALLYPORT_TEST_TRANSPORT=$$t $(GO) test -race -count=1 -timeout 8m ./internal/e2e/; \
	done
	set -e; for t in grpc $(E2E_TRANSPORTS); do \
		echo "== 1 GiB transfers over $$t"; \
		SALLYPORT_TEST_TRANSPORT=$$t $(GO) test -count=1 -timeout 5m -run '^TestBody' ./internal/e2e/; \
	done

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

# fuzz runs the tunnel-message fuzzer for FUZZTIME (e.g. make fuzz FUZZTIME=60s).
fuzz:
	$(GO) test ./tunnel -run '^$$' -fuzz FuzzDecodeFrame -fuzztime $(if $(filter 0,$(FUZZTIME)),30s,$(FUZZTIME))

bench: build
	./$(BIN) bench

clean:
	rm -rf bin
