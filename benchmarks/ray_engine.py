"""engine=local vs engine=ray on this machine (not a test; issue 14). Three measurements, each in a fresh process:

  sources  prep of every built-in source, uncapped: local (num_proc=2), Ray with 1 and with 2 workers; wall time,
           peak RSS and private memory of the driver and of the largest worker, and whether the outputs are
           byte-identical
  scale    prep on Ray (2 workers) of synthetic user files of N pairs (--sizes), 10% of them planted near
           duplicates of an earlier pair (one document word changed): wall time, peak RSS and private memory of the
           driver and of the largest worker (a worker's private memory must not grow with N; its RSS also counts
           the object-store pages it read), and recall of the planted duplicates
  mine     mining --docs synthetic pairs (documents of 8-16 vocabulary words) with the packaged MiniLM, --queries
           of them as queries: local vs Ray with 2 embedding actors, each with its own empty embedding cache; wall
           time and equality

  .venv/bin/python benchmarks/ray_engine.py sources /tmp/ray-bench
  .venv/bin/python benchmarks/ray_engine.py scale /tmp/ray-bench --sizes 1000000,2000000,5000000
  .venv/bin/python benchmarks/ray_engine.py mine /tmp/ray-bench --docs 200000 --queries 20000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

WORDS = [f"w{i}" for i in range(5000)]  # a synthetic vocabulary: random pairs never look alike by chance


def gte(*args: str) -> float:
    """Run `gte ARGS` in a fresh process -> wall seconds (the outputs record their own peak memory)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "train.app.cli", *args], check=True, cwd=ROOT,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})
    return time.perf_counter() - start


def output_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.suffix in (".parquet", ".jsonl", ".tsv")}


def peaks(folder: Path) -> str:
    """Peak RSS of the driver and the largest worker, and their private peaks (without the object-store pages a
    process mapped; a process-pool worker's private peak is not measured)."""
    manifest = json.loads((folder / "manifest.json").read_text())
    rss, private = manifest["peak_rss_mb"], manifest.get("peak_private_mb", {})
    return (f"RSS driver {rss['main']:.0f} / largest worker {rss['largest_worker']:.0f} MiB, private driver "
            f"{private.get('main', 0):.0f} / largest worker {private.get('largest_worker', 0):.0f} MiB")


def sources(work: Path) -> None:
    runs = {"local": ["num_proc=2"], "ray-1": ["engine=ray", "ray.num_workers=1"],
            "ray-2": ["engine=ray", "ray.num_workers=2"]}
    outputs = {}
    for name, extra in runs.items():
        out = work / f"sources-{name}"
        seconds = gte("prep", "configs/prep.yaml", f"out_dir={out}", "overwrite=true", *extra)
        outputs[name] = output_files(out)
        train = sum(s["train"] for s in json.loads((out / "manifest.json").read_text())["stats"].values())
        print(f"sources {name:6s}: {seconds:6.1f} s, {train:,} train pairs, {peaks(out)}, "
              f"identical to local: {outputs[name] == outputs['local']}", flush=True)


def synthetic(path: Path, n: int, seed: int = 0, words: list[str] = WORDS, doc_words: tuple[int, int] = (40, 80)
              ) -> int:
    """n pairs, the last 10% planted near duplicates of earlier pairs (the same query, one word of the 40-80-word
    document replaced: 3-word-shingle Jaccard 0.85-0.93, above the 0.8 threshold); keys name them (`orig-i`,
    `dup-i-of-j`). -> the number planted."""
    rng = random.Random(seed)
    planted = n // 10
    originals = n - planted
    with open(path, "w") as fh:
        rows = []
        for i in range(originals):
            q = " ".join(rng.choices(words, k=rng.randint(6, 12)))
            d = " ".join(rng.choices(words, k=rng.randint(*doc_words)))
            rows.append((q, d))
            fh.write(json.dumps({"query": q, "positive": d, "id": f"orig-{i}"}) + "\n")
        for i in range(planted):
            j = rng.randrange(originals)
            q, d = rows[j][0], rows[j][1].split()
            d[rng.randrange(len(d))] = rng.choice(words)
            fh.write(json.dumps({"query": q, "positive": " ".join(d), "id": f"dup-{i}-of-{j}"}) + "\n")
    return planted


def survivors(folder: Path) -> set[str]:
    import pyarrow.parquet as pq

    keys: set[str] = set()
    for path in folder.rglob("*.parquet"):
        keys.update(pq.read_table(path, columns=["key"]).column("key").to_pylist())
    return keys


def scale(work: Path, sizes: list[int]) -> None:
    for n in sizes:
        data = work / f"synthetic-{n}.jsonl"
        planted = synthetic(data, n)
        out = work / f"scale-{n}"
        files = f'files=[{{path: "{data}", name: synth, key: id}}]'
        seconds = gte("prep", "configs/prep.yaml", "sources=[]", files, f"out_dir={out}", "overwrite=true",
                         "engine=ray", "ray.num_workers=2", "decontaminate.stsb_test=false")
        kept = survivors(out)
        missed = sum(1 for k in kept if k.startswith("dup-") and f"orig-{k.rsplit('-of-', 1)[1]}" in kept)
        stats = json.loads((out / "manifest.json").read_text())["stats"]["synth"]
        print(f"scale {n:>9,} pairs: {seconds:6.1f} s ({n / seconds:,.0f} pairs/s), {peaks(out)}; planted "
              f"{planted:,}, near dups removed {stats['near_dups_within']:,}, recall of planted "
              f"{1 - missed / planted:.4f}", flush=True)


def vocabulary_words() -> list[str]:
    """Whole words of the packaged MiniLM's vocabulary (one token each: the encoder's cost is the real tokens)."""
    from gte_model import load_model

    vocab = load_model("all-MiniLM-L6-v2").tokenizer.get_vocab()
    return sorted(w for w in vocab if w.isalpha() and w.isascii() and len(w) >= 3)


def mine(work: Path, docs: int, queries: int) -> None:
    pairs = work / f"mine-pairs-{docs}"
    data = work / f"mine-{docs}.jsonl"
    if not data.is_file():  # seeded: a rerun keeps the file, so the prep below finds its output complete
        synthetic(data, docs, seed=1, words=vocabulary_words(), doc_words=(8, 16))
    files = f'files=[{{path: "{data}", name: synth, key: id}}]'
    gte("prep", "configs/prep.yaml", "sources=[]", files, f"out_dir={pairs}", "dedup.near=false",
        "decontaminate.enabled=false")
    outputs = {}
    for name, extra in {"local": [], "ray-2": ["engine=ray", "ray.num_workers=2"]}.items():
        out = work / f"mined-{name}"
        seconds = gte("mine", "configs/mine.yaml", f"input_dir={pairs}", f"out_dir={out}", "overwrite=true",
                         f"embed.cache_dir={work / ('cache-' + name)}", "max_corpus_per_source=0",
                         f"max_queries_per_source={queries}", *extra)
        outputs[name] = output_files(out)
        stats = json.loads((out / "mine_stats.json").read_text())
        source = stats["sources"]["synth"]
        print(f"mine {name:6s}: {seconds:6.1f} s for {source['corpus_docs']:,} docs + {queries:,} queries "
              f"({source['embedded_texts']:,} texts embedded), driver peak RSS {stats['peak_rss_mb']:.0f} MiB, "
              f"identical to local: {outputs[name] == outputs['local']}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=("sources", "scale", "mine"))
    p.add_argument("work", type=Path)
    p.add_argument("--sizes", default="1000000,2000000,5000000")
    p.add_argument("--docs", type=int, default=200_000)
    p.add_argument("--queries", type=int, default=20_000)
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.what == "sources":
        sources(args.work)
    elif args.what == "scale":
        scale(args.work, [int(s) for s in args.sizes.split(",")])
    else:
        mine(args.work, args.docs, args.queries)


if __name__ == "__main__":
    main()
