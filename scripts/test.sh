#!/usr/bin/env bash
# README's test command: a virtualenv with the project installed (the Rust extension is built by
# `pip install .`), ruff, then the whole pytest suite. Safe to re-run: the venv is reused.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
# shellcheck disable=SC1091
. "$VENV/bin/activate"
python -m pip install --quiet --upgrade pip
python -m pip install --quiet ".[gpt,lora,test]"
ruff check .
ruff format --check .
python -m pytest -q -p no:cacheprovider "$@"
