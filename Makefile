# Everything sermo needs is installed by this file: `make demo` and `make test` both
# create .venv when it is missing. torch is installed first from its CPU wheel so that
# nothing pulls a CUDA build.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.sermo-installed

.PHONY: demo test check-paper install browser clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/sermo demo

# the web page test drives Debian's headless Chromium; installed here where we are root (as in
# CI), otherwise that one test is skipped and says how to enable it
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else echo "chromium not installed and not root: the web page test will be skipped"; fi

# the type checker first (pyproject's [tool.mypy]: sermo/, the contract and the engine strictly)
test: $(STAMP) browser
	$(PY) -m mypy
	$(PY) -m pytest -q

# the paper-path check: every `paper` profile end to end on tiny randomly initialised models saved
# under the papers' Hub ids (offline), two-process DDP and bf16 runs, and every system on a corpus of one's
# own (categories only, text only; marked long); about 11 minutes alone on 2 cores
check-paper: $(STAMP)
	$(PY) -m pytest -q -m "paper or long" tests/paper tests/systems/test_own_corpus.py tests/serving/test_export.py

clean:
	rm -rf runs/demo .pytest_cache
