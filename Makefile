# `make demo` and `make test` are the README's quickstart; both set up .venv first.
# `make test-stacks` runs the package on the users' other stacks (tests/stacks.py),
# each built in a scratch venv; CI runs it after `make test`.
# `make lint` runs OpenMMLab's three checkers (as .pre-commit-config.yaml, offline).
PY := .venv/bin/python
LINTED := resnest_mm tools tests configs setup.py

.PHONY: setup demo backbone-demo test test-stacks lint
setup:
	bash tools/setup.sh

demo: setup
	bash tools/detection_demo.sh

backbone-demo: setup
	$(PY) tools/backbone_demo.py

test: setup
	$(PY) -m pytest tests -m "not stacks"

test-stacks: setup
	$(PY) -m pytest tests -m stacks -v -s  # test_stacks.py, test_deploy.py; -s: the builds' progress

lint: setup
	$(PY) -m flake8 $(LINTED)
	$(PY) -m isort --check-only --diff $(LINTED)
	$(PY) -m yapf --diff --recursive $(LINTED)
