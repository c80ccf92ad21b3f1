#!/usr/bin/env bash
# bench/gpu_check.py on a bare GPU machine: its python3 (with a CUDA torch) and no package registry.
#
# 1. Where pip reaches a registry, once, in the repository root:
#        bash bench/gpu_check.sh --fetch
#    puts the wheels that machine's python3 lacks (Python 3.12, x86-64 Linux; WHEEL_PYTHON to
#    change) in build/gpu_check/wheels (ignored by git, 7 MB).
# 2. On the GPU machine, with build/gpu_check next to the working tree:
#        bash bench/gpu_check.sh --out "$OUT/gpu_check.md"
#    installs those wheels into a temporary folder (no registry needed) if the packages are not
#    importable already, then runs python3 bench/gpu_check.py with the arguments given (under
#    8 minutes on one H100/H200). PYTHON names another interpreter (a venv with a CUDA torch).
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=${GPU_CHECK_WHEELS:-build/gpu_check/wheels}
# What the checks import beyond torch, numpy, yaml, tqdm, einops and matplotlib, pinned as the
# project's venv has them: demucs (the reference) and julius, audio I/O, Rubber Band.
PACKAGES=(demucs==4.1.0 julius==0.2.8 soundfile==0.14.0 cffi==2.1.1 pycparser==3.12 soxr==1.1.0 pedalboard==0.9.26)
PYTHON=${PYTHON:-python3}

if [[ "${1:-}" == "--fetch" ]]; then
    pip_python=$PYTHON
    [[ -x .venv/bin/python ]] && pip_python=.venv/bin/python
    mkdir -p "$WHEELS"
    "$pip_python" -m pip download -q --no-deps --only-binary=:all: --python-version "${WHEEL_PYTHON:-3.12}" \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$WHEELS" "${PACKAGES[@]}"
    ls -l "$WHEELS"
    exit 0
fi

if ! "$PYTHON" -c "import demucs, julius, soundfile, soxr, pedalboard" 2>/dev/null; then
    if ! compgen -G "$WHEELS/*.whl" >/dev/null; then
        echo "gpu_check.sh: $PYTHON lacks demucs/soundfile/soxr/pedalboard and $WHEELS holds no wheels;" \
             "run 'bash bench/gpu_check.sh --fetch' where pip reaches a registry, and bring $WHEELS along" >&2
        exit 2
    fi
    site=$(mktemp -d /tmp/gpu_check_site.XXXXXX)
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$WHEELS"/*.whl
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
exec "$PYTHON" bench/gpu_check.py "$@"
