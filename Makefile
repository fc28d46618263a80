# vmemlab — the two commands in the README are `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test bench guest guest-check lint venv vendor clean cluster cluster-stop

run: $(STAMP) vendor
	$(VENV)/bin/vmemlab serve

# browser assets (socket.io-client, plotly.js-dist-min) from npm into static/vendor/
vendor: static/vendor/.installed

static/vendor/.installed: package.json package-lock.json scripts/vendor.sh
	sh scripts/vendor.sh
	touch $@

test: $(STAMP) vendor
	$(PY) -m pytest -q

bench: $(STAMP) vendor
	$(PY) -m benchmarks

# nginx (:8080) + Redis + 3 gunicorn workers on this machine (docs/scaling.md)
cluster: $(STAMP) vendor
	VENV=$(VENV) bash deploy/cluster.sh start

cluster-stop:
	VENV=$(VENV) bash deploy/cluster.sh stop

guest:
	$(MAKE) -C guest

guest-check:
	$(MAKE) -C guest check

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

venv: $(STAMP)

# setup.py builds the native stage-2 fill (emulator/native/) when a C compiler is there
$(STAMP): pyproject.toml setup.py emulator/native/stage2_fill.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[web,dev]'
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
