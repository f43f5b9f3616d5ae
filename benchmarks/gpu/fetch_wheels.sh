#!/usr/bin/env bash
# Fetch the wheels benchmarks/gpu/run.sh installs on the GPU machine (Python 3.12, no network) into DEST (default
# .whl at the repo root, which git must ignore: `echo /.whl/ >> .git/info/exclude`; never commit wheels).
#
#   bash benchmarks/gpu/fetch_wheels.sh            # on a machine with PyPI access, e.g. this one
#   bash benchmarks/gpu/fetch_wheels.sh /tmp/whl   # elsewhere
#
# The GPU image already holds torch 2.11, transformers, sentence-transformers, accelerate, peft, pyarrow, pandas,
# xxhash, fsspec, huggingface-hub, psutil, matplotlib, pyyaml and tqdm. What our training imports and it lacks:
# omegaconf (train.config; 2.4 no longer needs antlr4-python3-runtime) and datasets (train.data, and
# sentence-transformers' trainer) with its dill and multiprocess. One version each (two stop the install).
set -euo pipefail
DEST=${1:-.whl}
PIP=${PIP:-python3 -m pip}
WHEELS=(
  omegaconf==2.4.0
  datasets==5.2.0
  dill==0.4.1
  multiprocess==0.70.19
)
mkdir -p "$DEST"
for wheel in "${WHEELS[@]}"; do
  $PIP download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$DEST" "$wheel"
done
ls -l "$DEST"
du -ch "$DEST"/*.whl | tail -1
