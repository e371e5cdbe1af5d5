#!/usr/bin/env bash
# The unit tests at the oldest versions pyproject.toml admits: every runtime floor pinned with ==,
# in a virtual environment of its own. On Linux, PyPI's torch 2.7.0 is a CUDA build (a few GB
# with its libraries); it runs on the CPU all the same.
#
#     tools/oldest_versions.sh [VENV]        (default: /tmp/course-oldest)
#     tools/oldest_versions.sh --floors      (only print the pins, one a line)
#
# Notebooks, browser tests and the lint check are left out: they need the `lab` and `dev` extras
# at their own versions, which tools/newest_versions.sh and constraints.txt cover.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-/tmp/course-oldest}
PYTHON=${PYTHON:-python3}

floors=$("$PYTHON" - <<'PY'
import re
try:
    import tomllib
except ImportError:
    import tomli as tomllib
with open("pyproject.toml", "rb") as f:
    for requirement in tomllib.load(f)["project"]["dependencies"]:
        name, floor = re.match(r"([A-Za-z0-9_.\-]+)\s*>=\s*([0-9][^,;\s]*)", requirement).groups()
        print(f"{name}=={floor}")
PY
)
if [[ ${1:-} == --floors ]]; then
    echo "$floors"
    exit 0
fi
echo "oldest admitted: $(echo $floors)"
"$PYTHON" -m venv "$VENV"
# torch first, alone: another package's looser requirement must not pull a newer build
"$VENV/bin/pip" install -q $(echo "$floors" | grep '^torch==')
"$VENV/bin/pip" install -q $floors pytest pytest-xdist nbformat psutil jupyter_client pyzmq \
    ipykernel "numpy<2" packaging
"$VENV/bin/pip" install -q --no-deps -e .
"$VENV/bin/pip" list 2>/dev/null | grep -iE "^(torch|diffusers|transformers|peft|accelerate|safetensors|numpy|matplotlib|pillow|tqdm|ipywidgets|huggingface.hub) "
PYTHONPATH=$PWD "$VENV/bin/python" -m pytest -q -rf -p no:cacheprovider -W ignore \
    -m "not notebook and not browser" \
    --ignore=tests/test_notebooks.py --ignore=tests/test_browser.py --ignore=tests/test_bench.py \
    --ignore=tests/test_install.py --ignore=tests/test_authoring.py \
    --deselect tests/test_package_hygiene.py::test_ruff_reads_the_solutions_code_cells_and_make_test_runs_it \
    tests
