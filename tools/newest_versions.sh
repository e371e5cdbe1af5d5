#!/usr/bin/env bash
# The unit tests at the newest versions the package index serves within pyproject.toml's ranges:
# a fresh virtual environment, torch 2.13.0 as `make` installs it, then every other requirement
# (all extras) upgraded eagerly to its newest admitted release. The counterpart of
# tools/oldest_versions.sh (the floors); constraints.txt pins the set `make test` last passed with.
#
#     tools/newest_versions.sh [VENV]        (default: /tmp/course-newest; emptied first)
#
# torch stays at 2.13.0 (a constraint keeps the eager upgrade off it): a newer build is a
# deliberate change of the course's numbers, and PyPI's Linux wheels are CUDA builds of several
# GB. On Linux without nvidia-smi it installs the CPU build, torch==2.13.0+cpu, from a folder in
# PIP_FIND_LINKS when one holds the wheel, else from PyTorch's CPU index.
# Notebooks and browser tests are left out, as in tools/oldest_versions.sh; at the end it lists
# what a cap in pyproject.toml holds below the newest release.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-/tmp/course-newest}
PYTHON=${PYTHON:-python3}
TORCH_VERSION=2.13.0

torch=(torch==$TORCH_VERSION)
if [[ $(uname -s) == Linux ]] && ! command -v nvidia-smi >/dev/null 2>&1; then
    torch=(torch==$TORCH_VERSION+cpu)
    if ! compgen -G "${PIP_FIND_LINKS:-/nonexistent}/torch-$TORCH_VERSION+cpu-*.whl" >/dev/null; then
        torch+=(--extra-index-url https://download.pytorch.org/whl/cpu)
    fi
fi

"$PYTHON" -m venv --clear "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q "${torch[@]}"
keep_torch=$(mktemp)
trap 'rm -f "$keep_torch"' EXIT
echo "torch==$TORCH_VERSION" >"$keep_torch"
"$VENV/bin/pip" install -q --upgrade --upgrade-strategy eager -c "$keep_torch" -e ".[dev]"
"$VENV/bin/pip" list 2>/dev/null | grep -iE "^(torch|diffusers|transformers|peft|accelerate|safetensors|numpy|matplotlib|pillow|tqdm|ipywidgets|huggingface.hub|jupyterlab|ipykernel|nbformat|papermill|nbval|pytest|ruff) "
status=0
PYTHONPATH=$PWD "$VENV/bin/python" -m pytest -q -rfE -p no:cacheprovider -p no:xdist \
    -m "not notebook and not browser" \
    --ignore=tests/test_notebooks.py --ignore=tests/test_browser.py --ignore=tests/test_bench.py \
    --ignore=tests/test_install.py tests || status=$?
echo "held below the newest release by a cap in pyproject.toml (or torch's pin):"
"$VENV/bin/pip" list --outdated 2>/dev/null || true
exit $status
