# Two commands matter: `make demo` and `make test`. Each creates .venv when it is missing and
# installs the project with its compiled extension first.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NATIVE_SRC := $(wildcard _native/*.pyx _native/*.pxi _native/*.pxd _native/*.h) setup.py
NATIVE_SO := $(VENV)/.native-built
PLUGINS := $(wildcard plugins/*/pyproject.toml)
BENCH_MESSAGES ?= 1000000

.PHONY: demo test bench bench-compare install build wheel lint typecheck ci-package ci-lowest \
	clean

install: $(STAMP)

# The project with its extras and every development group (pyproject.toml's
# [dependency-groups]; `--group` needs pip >= 25.1), and our plugin distributions (found through
# their entry points, like any installed plugin). One pip command: the plugins' `engine`
# requirement is met by this checkout, never looked up on an index.
$(STAMP): pyproject.toml setup.py $(PLUGINS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade 'pip>=25.1'
	$(PY) -m pip install --quiet -e '.[testing,prometheus,otel,postgres,cluster]' --group dev \
		$(foreach p,$(PLUGINS),-e $(dir $(p)))
	touch $(STAMP)

# Rebuild the extension in place when its sources change (pip built it once at install).
build: $(NATIVE_SO)

$(NATIVE_SO): $(STAMP) $(NATIVE_SRC)
	$(PY) setup.py --quiet build_ext --inplace
	touch $(NATIVE_SO)

demo: build
	$(PY) examples/epidemic.py --plot epidemic.png

test: build
	$(PY) -m pytest tests
	$(PY) -m ruff check engine tests bench examples plugins
	$(PY) -m mypy
	$(PY) -m mypy --strict $(filter-out %.egg-info,$(wildcard plugins/*/engine_*))
	BENCH_MESSAGES=20000 BENCH_MEMORY_AGENTS=10000 BENCH_HOPS=2000 BENCH_REQUESTS=500 \
		BENCH_SCALING_AGENTS=100,10000 BENCH_SCALING_MESSAGES=20000 BENCH_TIMERS=5000 \
		BENCH_PEER_MESSAGES=2000 BENCH_REALISTIC_AGENTS=2000 BENCH_STORE_AGENTS=2000 \
		BENCH_LOG_MESSAGES=20000 BENCH_CHECKPOINT_STEPS=100 BENCH_HIBERNATE_AGENTS=5000 \
		BENCH_HIBERNATE_MESSAGES=5000 BENCH_UPGRADE_AGENTS=2000 BENCH_LLM_AGENTS=50 \
		BENCH_LLM_TOKENS=50 BENCH_CLUSTER_MESSAGES=20000 BENCH_CLUSTER_HOPS=20 \
		BENCH_CLUSTER_PINGS=50 BENCH_CLUSTER_ROUNDS=1 \
		$(PY) -m pytest bench --benchmark-disable -q

bench: build
	BENCH_MESSAGES=$(BENCH_MESSAGES) $(PY) -m pytest bench --benchmark-only \
		--benchmark-save=baseline --benchmark-columns=min,median,mean,rounds
	$(PY) bench/report.py

bench-compare: build
	BENCH_MESSAGES=$(BENCH_MESSAGES) $(PY) -m pytest bench --benchmark-only \
		--benchmark-compare --benchmark-columns=min,median,mean,rounds

# The engine's sdist and wheel (built from the sdist), and our plugins', in dist/.
wheel: $(STAMP)
	$(PY) -m build --outdir dist .
	$(foreach p,$(PLUGINS),$(PY) -m build --outdir dist $(dir $(p)) &&) true

# CI's checks beyond `make test`: the packages as a user installs them, and the declared floors.
ci-package:
	.ci/package-check

ci-lowest:
	.ci/lowest-deps

lint:
	$(PY) -m ruff check engine tests bench examples plugins

typecheck:
	$(PY) -m mypy

clean:
	rm -rf build dist engine/*.so _native/*.c _native/*.html $(NATIVE_SO)
