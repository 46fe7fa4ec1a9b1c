# Illuminate: the same commands locally and in CI.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev
N ?= 1000

.PHONY: demo test lint bench faults install mosquitto browser faketime clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(RUN_STAMP): pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

$(DEV_STAMP): pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@ $(RUN_STAMP)

install: $(DEV_STAMP)

demo: $(RUN_STAMP)
	$(BIN)/illuminate demo

# $(call ensure,COMMAND,PATH,DEBIAN PACKAGE,WHAT FOR): install a system package the tests
# need when the machine lacks it and we may (root with apt-get); otherwise say so and stop.
define ensure
	@command -v $(1) >/dev/null 2>&1 || test -e $(2) || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing $(3) (Debian package '$(3)') for $(4)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(3) >/dev/null; \
	  else \
	    echo "$(4) need the Debian package $(3), which is missing. Install it (Debian: sudo apt-get install $(3)) and run make test again." >&2; \
	    exit 1; \
	  fi; }
endef

# The broker tests start their own Mosquitto.
mosquitto:
	$(call ensure,mosquitto,/usr/sbin/mosquitto,mosquitto,the broker tests)

# The browser test renders the public page in headless Chromium.
browser:
	$(call ensure,chromium,/usr/bin/chromium,chromium,the browser tests)

# The skewed-clock test runs an agent, and the clock fault scenario the controller,
# under libfaketime.
FAKETIME_LIB := $(firstword $(wildcard /usr/lib/*/faketime/libfaketimeMT.so.1) /usr/lib/faketime/libfaketimeMT.so.1)
faketime:
	$(call ensure,libfaketime,$(FAKETIME_LIB),libfaketime,the skewed-clock and clock fault tests)

# The whole suite, the fault-injection scenarios (tests/faults) at CI counts among it.
# Most tests wait on brokers, devices and windows rather than compute, so TEST_WORKERS
# processes share the cores; each test module stays in one worker (its fixtures run once).
TEST_WORKERS ?= 4
test: $(DEV_STAMP) mosquitto browser faketime lint
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadscope

# The fault-injection scenarios at full counts: 200 devices each, 1,000 for the mass
# reconnect, the database locked for 45 s (README, "Guarantees").
faults: $(DEV_STAMP) mosquitto faketime
	ILLUMINATE_FAULT_SCALE=1 $(BIN)/python -m pytest -q -m faults tests/faults

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy controller devices schedules

# On-demand benchmarks, end to end through a private Mosquitto, each beside a floor from
# the same run (docs/performance.md). `make bench N=200` sets the number of devices.
bench: $(DEV_STAMP) mosquitto
	$(BIN)/python -m bench --devices $(N)

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
