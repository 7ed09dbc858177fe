#!/usr/bin/env bash
# Creates .venv in the repository root and installs the quickstart's exact stack into
# it: every install runs with requirements/lock.txt as constraints, so .venv is the same
# wherever it is built (setup.py itself only gives ranges, for users' own environments).
# Idempotent: each step checks whether its result is already there and skips it if so,
# so a second run (or a run after an interrupted one) only does what is missing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
LOCK_FILE="$ROOT/requirements/lock.txt"
LOCK=(-c "$LOCK_FILE")
cd "$ROOT"

step() { printf '\n[setup] %s\n' "$*"; }
fail() {  # fail STEP FIX
  printf '\n[setup] FAILED at step: %s\n[setup] fix: %s\n' "$1" "$2" >&2
  exit 1
}
have() { "$PY" -I -c "$1" >/dev/null 2>&1; }  # -I: not fooled by modules in the current folder
locked() {  # locked DIST...: each is installed at its version in the lock
  "$PY" -I -c '
import sys, importlib.metadata as m
key = lambda name: name.lower().replace("_", "-")
pins = dict(map(key, line.split("#")[0].strip().split("=="))
            for line in open(sys.argv[1]) if "==" in line)
for name in sys.argv[2:]:
    assert m.version(name).split("+")[0] == pins[key(name)], name
' "$LOCK_FILE" "$@" >/dev/null 2>&1
}
pin() { sed -n "s/^$1==//Ip" "$LOCK_FILE"; }  # pin DIST: its version in the lock
pip_install() {  # pip_install STEP FIX ARGS...
  local name="$1" fix="$2"; shift 2
  "$PY" -m pip install --disable-pip-version-check "$@" || fail "$name" "$fix"
}
NET_FIX="check that the package index is reachable (pip config list; PIP_INDEX_URL) and run tools/setup.sh again; finished steps are skipped"

# 1. Python 3.11 and a virtual environment.
if [ ! -x "$PY" ]; then
  step "creating virtual environment at .venv"
  BASE_PY="${PYTHON:-python3.11}"
  command -v "$BASE_PY" >/dev/null 2>&1 || BASE_PY=python3
  "$BASE_PY" -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null \
    || fail "find Python 3.11" "install Python 3.11 and put it on PATH as python3.11 (or set PYTHON=/path/to/python3.11)"
  "$BASE_PY" -m venv "$VENV" || fail "create .venv" "install the venv module (Debian: apt-get install python3.11-venv)"
fi

[ -f "$LOCK_FILE" ] || fail "read requirements/lock.txt" "restore requirements/lock.txt (git checkout requirements/lock.txt)"

# 2. Build tools. setuptools 80.9.0 still ships pkg_resources, which mmcv's setup.py imports.
if ! { locked setuptools wheel && have 'import pkg_resources'; }; then
  step "installing build tools (setuptools $(pin setuptools), wheel)"
  pip_install "build tools" "$NET_FIX" setuptools wheel "${LOCK[@]}"
fi

# 3. torch first: mmcv builds against it. The exact pin takes the local CPU wheel.
if ! { locked torch && have 'import torch'; }; then
  step "installing torch $(pin torch)"
  pip_install "torch $(pin torch)" "$NET_FIX" torch "${LOCK[@]}"
fi

# 4. mmengine.
if ! { locked mmengine && have 'import mmengine'; }; then
  step "installing mmengine $(pin mmengine)"
  pip_install "mmengine $(pin mmengine)" "$NET_FIX" mmengine "${LOCK[@]}"
fi

# 5. mmcv 2.1.0 with its C++ ops: no wheel exists, so pip builds the sdist (about 11 min on
#    2 cores; pip caches the wheel, so later installs take seconds).
if ! { locked mmcv && have 'import mmcv.ops; from mmcv.ops import modulated_deform_conv2d'; }; then
  command -v "${CXX:-g++}" >/dev/null 2>&1 \
    || fail "build mmcv 2.1.0" "install a C++ compiler (Debian: apt-get install build-essential) and run tools/setup.sh again"
  "$PY" -c 'import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
    || fail "build mmcv 2.1.0" "install the Python headers (Debian: apt-get install python3.11-dev) and run tools/setup.sh again"
  step "building mmcv $(pin mmcv) with ops from source (about 11 minutes the first time, cached afterwards)"
  MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" pip_install "build mmcv $(pin mmcv)" \
    "read the compiler error above; the build needs torch installed first, g++, the Python headers and setuptools<81 (all handled by this script). Then run tools/setup.sh again" \
    --no-build-isolation mmcv "${LOCK[@]}"
fi

# 6. mmdet and mmseg (requirements/det.txt, seg.txt: mmseg imports ftfy and regex without
#    declaring them), pytest (tests.txt), and the test references (references.txt):
#    the authors' resnest package and mmpretrain, with --no-deps: the tests import only
#    their pure-torch models, which need none of their declared dependencies.
if ! { locked mmdet mmsegmentation ftfy regex pytest resnest mmpretrain && have 'import mmdet, mmseg, ftfy, regex, resnest, pytest'; }; then
  step "installing mmdet $(pin mmdet), mmsegmentation $(pin mmsegmentation) and the test tools"
  pip_install "mmdet/mmseg" "$NET_FIX" -r requirements/det.txt -r requirements/seg.txt \
    -r requirements/tests.txt "${LOCK[@]}"
  pip_install "test references" "$NET_FIX" --no-deps -r requirements/references.txt "${LOCK[@]}"
fi

# 7. What only tools/ needs (requirements/tools.txt): cityscapesscripts (the official
#    Cityscapes label table and polygon drawing, for tools/convert_cityscapes.py and the
#    demo data); ONNX export and its check (tools/export_onnx.py: torch's exporter needs
#    onnxscript, the check runs the graph in onnxruntime); safetensors (.safetensors weights).
if ! { locked cityscapesscripts onnx onnxruntime onnxscript safetensors && have 'import cityscapesscripts.preparation.json2labelImg, onnx, onnxruntime, onnxscript, safetensors'; }; then
  step "installing the tools' packages: cityscapesscripts $(pin cityscapesscripts), onnx $(pin onnx), onnxruntime $(pin onnxruntime), onnxscript $(pin onnxscript), safetensors $(pin safetensors)"
  pip_install "tools' packages" "$NET_FIX" -r requirements/tools.txt "${LOCK[@]}"
fi

# 7b. COCO's panoptic quality evaluation for mmdet's CocoPanopticMetric
#    (requirements/panoptic.txt): panopticapi-lite with --no-deps, as it declares
#    numpy<2 and plotting packages that the evaluation never imports.
if ! { locked panopticapi-lite && have 'import panopticapi.evaluation'; }; then
  step "installing COCO's panoptic evaluation: panopticapi-lite $(pin panopticapi-lite)"
  pip_install "panoptic evaluation" "$NET_FIX" --no-deps -r requirements/panoptic.txt "${LOCK[@]}"
fi

# 8. The linters, at the revisions OpenMMLab's pre-commit configs use (flake8, isort,
#    yapf; requirements/lint.txt).
if ! { locked flake8 isort yapf && have 'import flake8, isort, yapf'; }; then
  step "installing the linters: flake8 $(pin flake8), isort $(pin isort), yapf $(pin yapf)"
  pip_install "linters" "$NET_FIX" -r requirements/lint.txt "${LOCK[@]}"
fi

# 9. This package, editable, so code changes need no reinstall.
if ! have "import importlib.metadata as m; assert m.distribution('resnest_mm').locate_file('') and __import__('resnest_mm').__file__.startswith('$ROOT/')"; then
  step "installing resnest_mm (editable)"
  pip_install "resnest_mm" "check setup.py for errors and run tools/setup.sh again" --no-build-isolation --no-deps -e "$ROOT"
fi

step "environment ready: $VENV"
