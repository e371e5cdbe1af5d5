#!/usr/bin/env bash
# Run a command with no network at all: in a network namespace of its own whose only interface is
# the loopback, brought up (Jupyter talks to its kernels over it). Every name lookup and every
# connection beyond the machine fails at once, as on a laptop on a train.
#
#     tools/offline.sh COMMAND [ARG...]
#     tools/offline.sh .venv/bin/python -m pytest -p no:xdist -q tests/test_notebooks.py -k 00_
#
# As root it uses `unshare --net`; otherwise `unshare --user --map-root-user --net`, which needs
# unprivileged user namespaces (most Linux distributions allow them). Exit status 3: no namespace
# could be made here, so nothing ran.
set -euo pipefail
if [[ $# -eq 0 ]]; then
    echo "usage: tools/offline.sh COMMAND [ARG...]" >&2
    exit 2
fi
if [[ $(id -u) -eq 0 ]]; then
    isolate=(unshare --net)
else
    isolate=(unshare --user --map-root-user --net)
fi
if ! "${isolate[@]}" true 2>/dev/null; then
    echo "tools/offline.sh: cannot make a network namespace here (${isolate[*]} failed)" >&2
    exit 3
fi
# shellcheck disable=SC2016  # $@ expands inside the namespace
exec "${isolate[@]}" sh -c 'ip link set lo up && exec "$@"' offline "$@"
