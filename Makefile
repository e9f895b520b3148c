# tsforge developer commands.
#   make run         install, then the default experiment: python -m tsforge.launch
#   make test        install, lint and run the whole suite (what CI runs)
#   make unit        the fast unit tests only
#   make lint        ruff
# torch: GPU users install their CUDA build of torch first; otherwise torch==2.13.0 (CPU) is taken.
PY ?= python
export PIP_DISABLE_PIP_VERSION_CHECK = 1

.PHONY: install run lint unit test

install:
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'

run: install
	$(PY) -m tsforge.launch

lint:
	$(PY) -m ruff check .

unit:
	$(PY) -m pytest tests/unit -q

test: install lint
	$(PY) -m pytest -q
