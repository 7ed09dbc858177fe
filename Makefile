# `make demo` and `make test` are the README's quickstart; both set up .venv first.
PY := .venv/bin/python

.PHONY: setup demo backbone-demo test
setup:
	bash tools/setup.sh

demo: setup
	bash tools/detection_demo.sh

backbone-demo: setup
	$(PY) tools/backbone_demo.py

test: setup
	$(PY) -m pytest tests
