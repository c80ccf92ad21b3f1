# The two commands a newcomer types: `make test` and (later) `make demo`.
# Each installs what it needs into $(VENV) first.
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU machines take this torch (a CPU wheel); a CUDA torch already importable
# by $(SYSTEM_PYTHON) is kept instead (the venv then sees system packages).
TORCH_CPU ?= torch==2.13.0
SYSTEM_PYTHON ?= python3
PYTEST_ARGS ?=

.PHONY: install test clean-venv

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@if $(SYSTEM_PYTHON) -c "import torch, sys; sys.exit(0 if torch.version.cuda else 1)" 2>/dev/null; then \
		echo "install: keeping the CUDA torch of $(SYSTEM_PYTHON)"; \
		$(SYSTEM_PYTHON) -m venv --system-site-packages $(VENV); \
	else \
		$(SYSTEM_PYTHON) -m venv $(VENV); \
		$(PY) -m pip install -q "$(TORCH_CPU)"; \
	fi
	$(PY) -m pip install -q -e ".[test]"
	@touch $@

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
