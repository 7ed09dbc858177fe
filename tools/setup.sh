#!/usr/bin/env bash
# Creates .venv in the repository root and installs the pinned stack into it.
# Idempotent: each step checks whether its result is already there and skips it if so,
# so a second run (or a run after an interrupted one) only does what is missing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
cd "$ROOT"

step() { printf '\n[setup] %s\n' "$*"; }
fail() {  # fail STEP FIX
  printf '\n[setup] FAILED at step: %s\n[setup] fix: %s\n' "$1" "$2" >&2
  exit 1
}
have() { "$PY" -I -c "$1" >/dev/null 2>&1; }  # -I: not fooled by modules in the current folder
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

# 2. Build tools. setuptools 80.9.0 still ships pkg_resources, which mmcv's setup.py imports.
if ! have 'import setuptools, wheel, pkg_resources; assert setuptools.__version__ == "80.9.0"'; then
  step "installing build tools (setuptools 80.9.0, wheel)"
  pip_install "build tools" "$NET_FIX" "setuptools==80.9.0" wheel
fi

# 3. torch first: mmcv builds against it. The exact pin takes the local CPU wheel.
if ! have 'import torch; assert torch.__version__.split("+")[0] == "2.13.0"'; then
  step "installing torch 2.13.0"
  pip_install "torch 2.13.0" "$NET_FIX" "torch==2.13.0"
fi

# 4. mmengine.
if ! have 'import mmengine; assert mmengine.__version__ == "0.10.7"'; then
  step "installing mmengine 0.10.7"
  pip_install "mmengine 0.10.7" "$NET_FIX" "mmengine==0.10.7"
fi

# 5. mmcv 2.1.0 with its C++ ops: no wheel exists, so pip builds the sdist (about 11 min on
#    2 cores; pip caches the wheel, so later installs take seconds).
if ! have 'import mmcv, mmcv.ops; assert mmcv.__version__ == "2.1.0"; from mmcv.ops import modulated_deform_conv2d'; then
  command -v "${CXX:-g++}" >/dev/null 2>&1 \
    || fail "build mmcv 2.1.0" "install a C++ compiler (Debian: apt-get install build-essential) and run tools/setup.sh again"
  "$PY" -c 'import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
    || fail "build mmcv 2.1.0" "install the Python headers (Debian: apt-get install python3.11-dev) and run tools/setup.sh again"
  step "building mmcv 2.1.0 with ops from source (about 11 minutes the first time, cached afterwards)"
  MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" pip_install "build mmcv 2.1.0" \
    "read the compiler error above; the build needs torch installed first, g++, the Python headers and setuptools<81 (all handled by this script). Then run tools/setup.sh again" \
    --no-build-isolation "mmcv==2.1.0"
fi

# 6. mmdet, mmseg and what they import without declaring it (ftfy, regex for mmseg);
#    cityscapesscripts (the official Cityscapes label table and polygon drawing, for
#    tools/convert_cityscapes.py and the demo data); the authors' resnest package
#    (--no-deps: it would pull torchvision) and mmpretrain (--no-deps: the tests import
#    only its backbone modules, which need nothing more) as test references; pytest.
if ! have 'import mmdet, mmseg, ftfy, regex, resnest, pytest, importlib.metadata as m; import cityscapesscripts.preparation.json2labelImg; assert mmdet.__version__ == "3.3.0" and mmseg.__version__ == "1.2.2" and m.version("mmpretrain") == "1.2.0" and m.version("cityscapesscripts") == "2.3.0"'; then
  step "installing mmdet 3.3.0, mmsegmentation 1.2.2, cityscapesscripts 2.3.0 and test tools"
  pip_install "mmdet/mmseg" "$NET_FIX" "mmdet==3.3.0" "mmsegmentation==1.2.2" ftfy regex "cityscapesscripts==2.3.0" pytest
  pip_install "authors' resnest reference" "$NET_FIX" --no-deps "resnest==0.0.5"
  pip_install "mmpretrain reference" "$NET_FIX" --no-deps "mmpretrain==1.2.0"
fi

# 7. ONNX export and its check (tools/export_onnx.py): torch's exporter needs onnxscript,
#    the check runs the graph in onnxruntime.
if ! have 'import importlib.metadata as m; assert (m.version("onnx"), m.version("onnxruntime"), m.version("onnxscript")) == ("1.23.2", "1.31.1", "0.7.2")'; then
  step "installing onnx 1.23.2, onnxruntime 1.31.1 and onnxscript 0.7.2"
  pip_install "ONNX export" "$NET_FIX" "onnx==1.23.2" "onnxruntime==1.31.1" "onnxscript==0.7.2"
fi

# 8. This package, editable, so code changes need no reinstall.
if ! have "import importlib.metadata as m; assert m.distribution('resnest_mm').locate_file('') and __import__('resnest_mm').__file__.startswith('$ROOT/')"; then
  step "installing resnest_mm (editable)"
  pip_install "resnest_mm" "check setup.py for errors and run tools/setup.sh again" --no-build-isolation --no-deps -e "$ROOT"
fi

step "environment ready: $VENV"
