# Two commands on a fresh machine with python3 and pip:
#   make lab    -> .venv, install, JupyterLab on notebooks/ (localhost, token on)
#   make test   -> .venv, install, pytest and pytest --nbval notebooks
# Both are idempotent: the install runs again only when pyproject.toml changes.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The tested torch. It is installed *before* the package: here it resolves to a
# local CPU build; an unpinned torch would pull several GB of CUDA packages.
# GPU users: install a CUDA build of the same version into .venv first (see README),
# it satisfies this pin and is kept.
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.edc_lab-installed

.PHONY: install test test-py test-nb test-other-cpu lab bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

test: install test-py test-nb

test-py: install
	$(BIN)/python -m pytest

test-nb: install
	$(BIN)/python -m pytest --nbval notebooks --nbval-sanitize-with notebooks/sanitize.cfg -p no:cacheprovider

# The whole suite again in a second float environment: ATen's scalar kernels, MKL's reproducible
# branch, oneDNN limited to SSE4.1 and one thread. Every kernel then rounds differently, as on
# another CPU (Intel, AMD), so a tolerance that only holds on the machine that wrote it fails here.
OTHER_CPU := ATEN_CPU_CAPABILITY=default MKL_CBWR=COMPATIBLE ONEDNN_MAX_CPU_ISA=SSE41 OMP_NUM_THREADS=1

test-other-cpu: install
	$(OTHER_CPU) $(MAKE) --no-print-directory test-py test-nb

# Jupyter refuses to run as root unless told; containers often run as root.
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--ServerApp.allow_root=True)

lab: install
	$(BIN)/jupyter lab --ServerApp.ip=127.0.0.1 --ServerApp.open_browser=False --ServerApp.root_dir=notebooks $(ALLOW_ROOT)

bench: install
	$(BIN)/edc-lab bench --device cpu

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
