#!/usr/bin/env bash
# Create .venv/ in the repository root and install ctvis (editable) with the pinned OpenMMLab stack.
#
# Idempotent: a second run with unchanged requirements finishes in seconds. mmcv 2.1.0 is built from
# source once (about 10 minutes on 2 cores) and its wheel cached in $CTVIS_CACHE_DIR (default
# ~/.cache/ctvis), keyed by the torch build it was compiled against.
#
# GPU users: install a CUDA build of torch into .venv first (docs/get_started.md); this script keeps
# any torch it finds there and builds mmcv's CUDA ops against it when CUDA is available.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
CACHE="${CTVIS_CACHE_DIR:-$HOME/.cache/ctvis}"
BASE_PYTHON="${CTVIS_PYTHON:-python3.11}"
STAMP="$VENV/.ctvis-setup"

log() { echo "[setup_env] $*"; }

# ctvis' C++ sources are part of it: a changed kernel is rebuilt by the editable install below.
fingerprint() {
    cat "$ROOT"/requirements/*.txt "$ROOT/setup.py" "${BASH_SOURCE[0]}" "$ROOT"/ctvis/ops/csrc/* \
        | sha256sum | cut -d' ' -f1
}
# Run from outside the checkout, as the tools import it (through the editable install): from
# inside, `import ctvis` finds the checkout's own folder even when the install points elsewhere
# (a moved or copied checkout).
CHECK_IMPORT='import os, sys, mmcv._ext, mmdet, ctvis, ctvis.ops
ctvis.ops.load_extension()
root = os.path.realpath(sys.argv[1])
found = os.path.realpath(ctvis.__file__)
assert found.startswith(root + os.sep), f"ctvis imports from {found}, not from {root}"'
check_import() { (cd / && "$PY" -c "$CHECK_IMPORT" "$ROOT"); }

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$(fingerprint)" ]] && check_import 2>/dev/null; then
    log "environment up to date ($VENV)"
    exit 0
fi

if [[ ! -x "$PY" ]]; then
    command -v "$BASE_PYTHON" >/dev/null || { echo "[setup_env] error: $BASE_PYTHON not found; set CTVIS_PYTHON to a Python 3.11 interpreter" >&2; exit 1; }
    log "creating $VENV with $BASE_PYTHON"
    "$BASE_PYTHON" -m venv "$VENV"
fi
if ! "$PY" -m pip --version >/dev/null 2>&1; then  # a creation that was interrupted
    log "$VENV has no pip (its creation was interrupted?): installing it with ensurepip"
    "$PY" -m ensurepip --upgrade >/dev/null \
        || { echo "[setup_env] error: cannot install pip into $VENV; delete $VENV and run again" >&2; exit 1; }
fi
PIP=("$PY" -m pip install --disable-pip-version-check -q)
PY_VERSION="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if [[ "$PY_VERSION" != 3.11 ]]; then
    log "warning: $VENV runs Python $PY_VERSION; ctvis and its pinned stack are tested on 3.11"
fi

"${PIP[@]}" -r "$ROOT/requirements/build.txt"

if ! "$PY" -c "import torch" 2>/dev/null; then
    log "installing torch==2.13.0 from pip's configured index (for a chosen CUDA build see docs/get_started.md)"
    "${PIP[@]}" "torch==2.13.0"
fi
TORCH_TAG="$("$PY" -c 'import torch; print(torch.__version__.replace("+", "_"))')"
PY_TAG="$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"

if ! "$PY" -c "import mmcv, mmcv._ext; assert mmcv.__version__ == '2.1.0'" 2>/dev/null; then
    # with a CUDA build of torch, mmcv compiles its CUDA ops only where it sees CUDA (a GPU, or
    # FORCE_CUDA=1): a wheel built without them must not be reused on a GPU machine
    OPS_TAG="$("$PY" -c 'import os, torch
if torch.version.cuda:
    with_cuda = torch.cuda.is_available() or os.environ.get("FORCE_CUDA") == "1"
    print("-cuda-ops" if with_cuda else "-cpu-ops")')"
    WHEEL_DIR="$CACHE/wheels/torch-$TORCH_TAG$OPS_TAG"
    WHEEL_GLOB="mmcv-2.1.0-$PY_TAG-*.whl"  # a wheel of another Python does not install
    mkdir -p "$WHEEL_DIR"
    for cached in "$WHEEL_DIR"/$WHEEL_GLOB; do  # a wheel cut short (an interrupted copy)
        if [[ -f "$cached" ]] && ! "$PY" -m zipfile -t "$cached" >/dev/null 2>&1; then
            log "removing the damaged cached wheel $cached"
            rm -f "$cached"
        fi
    done
    if ! ls "$WHEEL_DIR"/$WHEEL_GLOB >/dev/null 2>&1; then
        log "building mmcv 2.1.0 with its ops against torch $TORCH_TAG (one-time, ~10 min on 2 cores)"
        "${PIP[@]}" "numpy>=1.24,<2.5" addict pyyaml yapf "opencv-python-headless>=4.8,<5" "mmengine==0.10.7"
        BUILD_TMP="$(mktemp -d)"
        trap 'rm -rf "$BUILD_TMP"' EXIT
        MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
            "$PY" -m pip wheel --disable-pip-version-check -q --no-build-isolation --no-deps \
            "mmcv==2.1.0" -w "$BUILD_TMP"
        BUILT="$(ls "$BUILD_TMP"/mmcv-2.1.0-*.whl | head -n1)"
        # copied under a temporary name, then renamed: the cache never holds a partial wheel
        cp "$BUILT" "$WHEEL_DIR/.partial-$$.whl"
        mv "$WHEEL_DIR/.partial-$$.whl" "$WHEEL_DIR/$(basename "$BUILT")"
    fi
    "${PIP[@]}" "$(ls "$WHEEL_DIR"/$WHEEL_GLOB | head -n1)"
fi

log "installing runtime and test requirements"
"${PIP[@]}" -r "$ROOT/requirements/runtime.txt" -r "$ROOT/requirements/tests.txt"
"${PIP[@]}" --no-deps --no-build-isolation -e "$ROOT"

check_import || { echo "[setup_env] error: the installed stack does not import" >&2; exit 1; }
fingerprint > "$STAMP"
log "ready: $("$PY" -c 'import torch, mmcv, mmdet, mmengine; print(f"torch {torch.__version__}, mmengine {mmengine.__version__}, mmcv {mmcv.__version__}, mmdet {mmdet.__version__}")')"
