# `make demo` and `make test` are the README's quickstart; both set up .venv first.
# `make lint` runs OpenMMLab's three checkers (as .pre-commit-config.yaml, offline).
PY := .venv/bin/python
LINTED := resnest_mm tools tests configs setup.py

.PHONY: setup demo backbone-demo test lint
setup:
	bash tools/setup.sh

demo: setup
	bash tools/detection_demo.sh

backbone-demo: setup
	$(PY) tools/backbone_demo.py

test: setup
	$(PY) -m pytest tests

lint: setup
	$(PY) -m flake8 $(LINTED)
	$(PY) -m isort --check-only --diff $(LINTED)
	$(PY) -m yapf --diff --recursive $(LINTED)
