# baldurd — run `make help` for the list of targets.
SHELL := /bin/bash
GO ?= go
BIN := bin
PROTO_SRC := $(shell find api/proto -name '*.proto')
# The server module (.), the Go SDK (sdk/go), its optional Prometheus adapter
# (sdk/go/baldurprom) and the generated API (api) are separate Go modules;
# vet and test run in each.
MODULES := . sdk/go sdk/go/baldurprom api

.PHONY: help
help: ## List the targets
	@awk 'BEGIN{FS=":.*## "} /^[a-zA-Z_-]+:.*## /{printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build baldurd and baldurctl into bin/
	$(GO) build -o $(BIN)/baldurd ./cmd/baldurd
	$(GO) build -o $(BIN)/baldurctl ./cmd/baldurctl

IMAGE ?= ghcr.io/baldurhq/baldurd:dev
CONTAINER ?= docker

.PHONY: image
image: ## Build the container image (IMAGE=name:tag, CONTAINER=docker|podman)
	@command -v $(CONTAINER) >/dev/null 2>&1 || { echo "make image needs $(CONTAINER) (or CONTAINER=podman)" >&2; exit 1; }
	$(CONTAINER) build -t $(IMAGE) .

.PHONY: static
static: ## Build statically linked baldurd and baldurctl into bin/static (what the image holds)
	./scripts/build-static.sh $(BIN)/static

.PHONY: run
run: build ## Build and start a single-node dev server (baldurd --dev)
	$(BIN)/baldurd --dev

.PHONY: cluster
cluster: build ## Start a 3-node loopback cluster in the foreground (Ctrl-C stops it; TLS=1 for mutual TLS)
	./scripts/cluster.sh

.PHONY: test
test: ## Run every test: unit, in-process clusters, built binaries, process-level faults, fuzz targets
	@if [ -z "$${BALDUR_TEST_PG_DSN:-}" ] && ! (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then \
	  echo "notice: PostgreSQL tests are skipped: BALDUR_TEST_PG_DSN is unset and nothing answers on 127.0.0.1:5432"; fi
	@if [ -z "$${BALDUR_TEST_HELM:-}" ] && ! command -v helm >/dev/null && [ ! -x "$$(go env GOPATH)/bin/helm" ]; then \
	  echo "notice: chart tests are skipped: no helm (go install helm.sh/helm/v3/cmd/helm@v3.22.0)"; fi
	@if [ -z "$${BALDUR_TEST_CHROMIUM:-}" ] && ! command -v chromium >/dev/null; then \
	  echo "notice: console browser tests are skipped: no chromium (apt-get install chromium)"; fi
	$(MAKE) vet
	$(GO) test -count=1 -timeout 20m ./...
	cd sdk/go && $(GO) test -count=1 -timeout 5m ./...
	cd sdk/go/baldurprom && $(GO) test -count=1 -timeout 5m ./...
	$(MAKE) fuzz-seed

.PHONY: vet
vet: ## go vet in every module
	@for m in $(MODULES); do echo "go vet ($$m)"; (cd $$m && $(GO) vet ./...) || exit 1; done

.PHONY: test-short
test-short: ## Unit tests only
	$(GO) test -short -count=1 ./...
	cd sdk/go && $(GO) test -short -count=1 ./...
	cd sdk/go/baldurprom && $(GO) test -short -count=1 ./...

.PHONY: fuzz-seed
fuzz-seed: ## Run each fuzz target briefly beyond its seed corpus
	$(GO) test -run='^$$' -fuzz=FuzzDecodeCommand -fuzztime=10s ./server
	$(GO) test -run='^$$' -fuzz=FuzzRESTDecode -fuzztime=10s ./server
	$(GO) test -run='^$$' -fuzz=FuzzInternalApply -fuzztime=10s ./server

.PHONY: proto
proto: ## Regenerate api/gen and the OpenAPI document from api/proto (needs protoc)
	./scripts/proto.sh

.PHONY: proto-check
proto-check: ## Fail if api/gen is stale
	./scripts/proto.sh --check

.PHONY: lint
lint: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v -e '^api/gen/' -e '^internal/gateway/')); if [ -n "$$out" ]; then echo "gofmt:"; echo "$$out"; exit 1; fi
	$(MAKE) vet

.PHONY: bench
bench: build ## Run the benchmarks reported in docs/benchmarks.md
	$(GO) test -run='^$$' -bench=. -benchmem ./...
	cd sdk/go && $(GO) test -run='^$$' -bench=. -benchmem ./...
