#!/usr/bin/env bash
# Set up everything hetsfl needs on a fresh Debian machine: the Fashion-MNIST package (when apt is
# usable and the data are missing) and a Python 3.11 virtual environment with the pinned packages.
# Idempotent: a second run only checks. Usage: scripts/setup.sh [VENV_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv}
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

FMNIST=/usr/share/datasets/fashion-mnist
if [[ ! -f $FMNIST/train-images-idx3-ubyte.gz ]]; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Debian package dataset-fashion-mnist"
    apt-get update -qq || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
  else
    echo "setup: warning: $FMNIST is missing and apt-get is not usable here;" >&2
    echo "       install 'dataset-fashion-mnist' or put the four IDX .gz files in the config's data_dir." >&2
  fi
fi

stamp=$VENV/.hetsfl-installed
if [[ -f $stamp && $stamp -nt pyproject.toml ]]; then
  exit 0
fi
if [[ ! -x $VENV/bin/python ]]; then
  echo "setup: creating virtual environment $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
echo "setup: installing hetsfl and its pinned dependencies into $VENV (torch comes from the local wheel cache)"
"$VENV/bin/pip" install -q -e '.[dev]'
touch "$stamp"
