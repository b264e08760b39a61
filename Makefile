# Two commands do everything on a fresh machine with Python 3.11 and pip:
#   make run    create .venv if missing, then train the default model on 2 local ranks via TorchX
#   make test   create .venv if missing, then run the test suite (what CI runs)
PYTHON ?= python3.11
VENV ?= .venv
NPROC ?= 2
ARGS ?=
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: run test lint venv clean

$(VENV)/.installed: requirements.txt pyproject.toml third_party/fbgemm_gpu_shim/pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: set PYTHON=/path/to/python3.11"; exit 1; }
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -r requirements.txt
	touch $@

venv: $(VENV)/.installed

run: venv
	torchx run -s local_cwd dist.ddp -j 1x$(NPROC) --script dlf_torchrec/train.py $(if $(ARGS),-- $(ARGS))

test: venv
	python -m pytest -q

lint: venv
	ruff check .

clean:
	rm -rf runs data/processed
