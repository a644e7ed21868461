# Two commands for a fresh clone: `make demo` and `make test`. Both create .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: demo test lint install browser clean-venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# CPU build of PyTorch: a plain `torch` would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e ".[all]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/labelfield demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

# Browser tests of `labelfield serve` (tests/test_serve_browser.py): the serve + browser-test extras and
# Debian's chromium (Playwright's own browser download is not reachable). apt-get runs only as root or in CI
# (with sudo); elsewhere the browser tests skip with a message saying what to install.
browser: $(STAMP)
	$(BIN)/python -c "import starlette, uvicorn, playwright" 2>/dev/null || \
		$(BIN)/python -m pip install -q -e ".[serve,browser-test,dev]"
	@if command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	elif [ -n "$$CI" ] && command -v sudo >/dev/null; then sudo apt-get update -qq && \
		sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else echo "note: chromium not found and not root: the browser tests will be skipped (apt-get install chromium)"; fi

test: $(STAMP) lint browser
	$(BIN)/python -m pytest tests

clean-venv:
	rm -rf $(VENV)
