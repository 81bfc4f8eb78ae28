#!/usr/bin/env bash
# Create .venv with everything plasticd needs, from scratch, on a Debian-like machine.
#   1. Debian's dataset-fashion-mnist (the built-in data stream), unless already there;
#   2. torch 2.13.0 first (a CPU wheel where one is offered), so nothing later pulls CUDA wheels;
#   3. plasticd itself, editable, with its test extras;
#   4. a check that pip did not replace torch.
set -euo pipefail
cd "$(dirname "$0")"
TORCH_VERSION="${PLASTICD_TORCH_VERSION:-2.13.0}"
PYTHON="${PYTHON:-python3}"

if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    if ! $SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null; then
        $SUDO apt-get update -q >/dev/null
        $SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null
    fi
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q "torch==${TORCH_VERSION}"
.venv/bin/python -m pip install -q -e '.[test]'
installed=$(.venv/bin/python -c 'import torch; print(torch.__version__.split("+")[0])')
if [ "$installed" != "$TORCH_VERSION" ]; then
    echo "setup.sh: pip replaced torch ${TORCH_VERSION} with ${installed}" >&2
    exit 1
fi
echo "setup.sh: .venv ready (torch ${installed}, $(.venv/bin/plasticd --version))" >&2
