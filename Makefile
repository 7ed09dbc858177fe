# `make demo` and `make test` are the README's quickstart; both set up .venv first.
PY := .venv/bin/python

.PHONY: setup demo test
setup:
	bash tools/setup.sh

demo: setup
	$(PY) tools/backbone_demo.py

test: setup
	$(PY) -m pytest tests
