"""The documents of a pairs dir's held-out BEIR sets, one jsonl per set, for adapting a model to them from documents
alone (configs/domain.yaml; docs/domain.md, "Documents alone, measured"). The queries are never read.

  .venv/bin/python benchmarks/beir_documents.py runs/quickstart/data/pairs /tmp/docs     # -> /tmp/docs/<set>.jsonl
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from gte_model.core.pairs import beir_dirs


def main(pairs_dir: str, out_dir: str) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, folder in beir_dirs(pairs_dir).items():
        rows = [json.loads(line) for line in (Path(folder) / "corpus.jsonl").read_text().splitlines()]
        with open(out / f"{name}.jsonl", "w", encoding="utf-8") as fh:
            for row in rows:  # title is "" in a prep BEIR set: the document text is all there is
                fh.write(json.dumps({"id": row["_id"], "text": row["text"]}, ensure_ascii=False) + "\n")
        print(f"{name}: {len(rows)} documents -> {out / name}.jsonl")


if __name__ == "__main__":
    main(*sys.argv[1:3])
