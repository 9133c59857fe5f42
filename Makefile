# Set-up and the two README commands. Everything installs into .venv/ at the repo root.
#   make demo   -- create .venv, install, run the main job (`ns-compile demo`) on the shipped demo model (examples/)
#   make test   -- create .venv, install, run the whole test suite
SHELL := /bin/bash
VENV := .venv
CONSTRAINTS := requirements/constraints.txt
# Lava (lava-nc 0.10) needs Python 3.10: take pyenv's, else any python3.10 on PATH.
PYTHON310 ?= $(shell pyenv which python3.10 2>/dev/null || command -v python3.10 || ls -d $$HOME/.pyenv/versions/3.10*/bin/python3.10 2>/dev/null | tail -1)
STAMP := $(VENV)/.installed
# extra options for the demo, e.g. make demo DEMO_ARGS="--model nord --max-new-tokens 32"
DEMO_ARGS ?=

.PHONY: venv demo test clean

venv: $(STAMP)

$(STAMP): pyproject.toml setup.py $(CONSTRAINTS)
	@test -n "$(PYTHON310)" || { echo "error: Python 3.10 not found (pyenv install 3.10.13)"; exit 2; }
	$(PYTHON310) -m venv $(VENV)
	$(VENV)/bin/pip install -q -c $(CONSTRAINTS) -e '.[lava,dev]'
	# lava-dl 0.6.0 pins torch<2.4 and torchvision<0.19: install it alone; its needs are in the [lava] extra
	$(VENV)/bin/pip install -q -c $(CONSTRAINTS) --no-deps lava-dl==0.6.0
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ns-compile demo $(DEMO_ARGS)

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

clean:
	rm -rf $(VENV)
