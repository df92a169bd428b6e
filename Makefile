# The two commands of the README: `make run` and `make test`. Each creates or updates .venv itself.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# The CPU build of torch by default (fast to install, what CI uses). For an NVIDIA GPU, see the
# README: e.g. make run TORCH="torch" TORCH_INDEX=https://download.pytorch.org/whl/cu128
TORCH       ?= torch==2.13.0
TORCH_INDEX ?=
ARGS ?=

.PHONY: run test lint package clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	# sd-prompt-reader's parsers are a test oracle; the package pins Pillow 10.3 and GUI
	# libraries for its app, which its parsers do not use: installed without them
	$(BIN)/python -m pip install --quiet --no-deps "sd-prompt-reader==1.3.5"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/sd3desk $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/pyright

test: lint
	QT_QPA_PLATFORM=offscreen HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

# The Linux bundle, .deb and .tar.gz with the CPU torch, proven by a self-test of the extracted
# .deb in a clean environment and a screenshot under Xvfb (several minutes; see packaging/).
package: $(STAMP)
	$(BIN)/python packaging/prove_linux.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache packaging/build packaging/dist
