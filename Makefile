# Everything sermo needs is installed by this file: `make demo` and `make test` both
# create .venv when it is missing. torch is installed first from its CPU wheel so that
# nothing pulls a CUDA build.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.sermo-installed

.PHONY: demo test install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/sermo demo

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf runs/demo .pytest_cache
