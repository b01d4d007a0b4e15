#!/usr/bin/env bash
# Set up rlspeedrun on a fresh Debian machine with Python 3.11: system packages (clang, which
# tinygrad's CPU backend compiles kernels with; bubblewrap, the agent's sandbox), a virtual
# environment in .venv, the package.
#   bash scripts/setup.sh                  # core + the environments of every tier (extra `envs`)
#   EXTRAS= bash scripts/setup.sh          # core only: enough for the quick tier (other tiers' tests skip)
#   EXTRAS=envs,peers bash scripts/setup.sh   # also Stable-Baselines3 + torch, for the peer comparison
#   EXTRAS=envs,peers,peers-sbx,peers-rltools bash scripts/setup.sh   # also sbx (JAX) and RLtools (+ g++, OpenBLAS)
#   EXTRAS=envs,dev bash scripts/setup.sh     # also ruff and actionlint (+ shellcheck), the lints CI runs
#   EXTRAS=envs,ray bash scripts/setup.sh     # also Ray, for pytest bench/ --ray (README: Many runs at once)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
EXTRAS=${EXTRAS-envs}

if ! command -v clang >/dev/null 2>&1; then
  echo "setup: installing clang (tinygrad's CPU backend needs it)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq clang >/dev/null
fi

if ! command -v bwrap >/dev/null 2>&1; then
  echo "setup: installing bubblewrap (the agent's sandbox)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq bubblewrap >/dev/null
fi

if ! "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then
  echo "setup: installing python3-venv"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
fi

if [[ ",$EXTRAS," == *",dev,"* ]] && ! command -v shellcheck >/dev/null 2>&1; then
  echo "setup: installing shellcheck (actionlint checks the workflows' shell steps with it)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq shellcheck >/dev/null
fi

if [[ ",$EXTRAS," == *",peers-rltools,"* ]] && ! dpkg -s g++ libopenblas-dev >/dev/null 2>&1; then
  echo "setup: installing g++ and OpenBLAS (RLtools compiles its C++ at run time; with a BLAS its SAC updates are 6x faster)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq g++ libopenblas-dev >/dev/null
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if [ -n "${EXTRAS:-}" ]; then
  # for `peers`: install a CPU build of torch into .venv first if you do not want pip's default build
  .venv/bin/python -m pip install -q -e ".[$EXTRAS]"
else
  .venv/bin/python -m pip install -q -e .
fi
.venv/bin/python -c "import tinygrad, gymnasium; from tinygrad import Tensor; assert (Tensor([1.0, 2.0]) * 2).tolist() == [2.0, 4.0]" \
  && echo "setup: ok ($(.venv/bin/python --version), tinygrad $(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("tinygrad"))'))"
.venv/bin/python -c "from bench.referee.sandbox import probe; s = probe(); print('setup: sandbox', s.label)"
