"""Training rows from a pairs dir (manifest.json + parquet shards), fetched by index, never loaded whole.

Each source's train shards open as one memory-mapped `datasets` Dataset (parquet -> Arrow cache once, then
random access by index without reading the rest), so a corpus larger than RAM trains the same as a tiny one.
The sampler (train/sampler.py) decides which rows make a batch; this module turns (source, row indices) into
texts, and samples each query's hard negatives from its row's `negatives` list.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

from gte_model.core.errors import UserError, names_path
from gte_model.core.pairs import DEV_SPLIT, MANIFEST_FILE, TEXT_COLUMNS, check_shards, read_manifest, resolve
from train.batch import Batch, Tokenize


class DataError(UserError, ValueError):
    """A pairs dir that cannot be trained on; the message names the file and the fix."""


class PairsData:
    """The train and validation splits of a pairs dir, one memory-mapped Dataset per source and split. The
    validation rows (`heldout=True`, heldout_sizes, heldout_batch) are the dev split (prep's split.dev_fraction),
    never the held-out test rows: a source without a dev split has none."""

    def __init__(
        self,
        train_dir: str | Path,
        sources: list[str] | None = None,
        cache_dir: str | Path | None = None,
        num_negatives: int = 0,
        heldout: bool = True,
        repeat_negatives: bool = False,
        batch_rows: int = 0,
        verify_shards: bool = True,
    ) -> None:
        """batch_rows: the rows one batch takes from a source (train.global_batch_size); a source with fewer could
        never fill one and is refused here, naming it. verify_shards: check each shard against the sha256 its
        manifest recorded (one read per shard: one process per machine does it)."""
        self.root = Path(train_dir)
        self.manifest = read_manifest(self.root)
        known = sorted(self.manifest["sources"])
        missing = [s for s in sources or [] if s not in known]
        if missing:
            raise DataError(
                f"data.sources={list(sources or [])}: {missing} not in {self.root / 'manifest.json'}; "
                f"known sources: {known}"
            )
        self.names = sorted(sources) if sources else known
        self.num_negatives = int(num_negatives)
        self.cache_dir = str(cache_dir) if cache_dir else None
        self.verify_shards = verify_shards
        columns = [*TEXT_COLUMNS, "negatives"] if self.num_negatives else list(TEXT_COLUMNS)
        self._train = {s: self._open(s, "train", columns) for s in self.names}
        self._heldout = {s: self._open(s, DEV_SPLIT, list(TEXT_COLUMNS)) if DEV_SPLIT in self.manifest["sources"][s]
                         else _Empty() for s in self.names} if heldout else {}
        self.pretokenized = False  # see pretokenize
        if self.num_negatives and not repeat_negatives:
            self._check_negative_counts()
        self._check_sizes(batch_rows)

    # ---- sizes --------------------------------------------------------------------------------------------
    def train_sizes(self) -> dict[str, int]:
        return {s: len(ds) for s, ds in self._train.items()}

    def heldout_sizes(self) -> dict[str, int]:
        return {s: len(ds) for s, ds in self._heldout.items()}

    # ---- rows ---------------------------------------------------------------------------------------------
    def train_batch(self, source: str, rows: list[int], seed: int, step: int) -> Batch:
        """Texts of `rows` of a source's train split, with num_negatives negatives sampled per row (and their
        token ids when the data was pretokenized)."""
        got = self._train[source][rows]
        negatives: list[list[str]] = [[] for _ in rows]
        neg_ids: list[list[list[int]]] = [[] for _ in rows]
        if self.num_negatives:
            where = self._where(source, "train")
            picks = [
                sample_negatives(len(negs), self.num_negatives, seed, step, source, row, where)
                for row, negs in zip(rows, got["negatives"])
            ]
            negatives = [[negs[i] for i in pick] for pick, negs in zip(picks, got["negatives"])]
            if self.pretokenized:
                neg_ids = [[x[i] for i in pick] for pick, x in zip(picks, got["negatives_ids"])]
        ids = None
        if self.pretokenized:
            ids = Batch.flat_ids(got["query_ids"], got["positive_ids"], neg_ids)
        return Batch(source, list(rows), list(got["query"]), list(got["positive"]), negatives, ids)

    def train_texts(self, source: str) -> tuple[list[str], list[str]]:
        """(queries, documents) of a source's train split, each text once in first-seen order; documents are the
        positives and every stored negative (all of them, not the num_negatives a step samples)."""
        ds = self._train[source]
        documents = list(ds["positive"])
        if "negatives" in ds.column_names:
            documents += [text for negs in ds["negatives"] for text in negs]
        return list(dict.fromkeys(ds["query"])), list(dict.fromkeys(documents))

    def train_pairs(self, source: str) -> list[tuple[str, str]]:
        """(query, document) pairs of a source's train split, each pair once in first-seen order: every query with
        its positive and with every stored negative (what a cross-encoder teacher scores)."""
        ds = self._train[source]
        negatives = ds["negatives"] if "negatives" in ds.column_names else [[] for _ in range(len(ds))]
        pairs = (pair for q, p, negs in zip(ds["query"], ds["positive"], negatives) for pair in [(q, p)] +
                 [(q, n) for n in negs])
        return list(dict.fromkeys(pairs))

    def pretokenize(self, tokenize: Tokenize, key: str, num_proc: int = 1) -> None:
        """Tokenise every train split once into token-id columns of the Arrow cache (reused by later runs with the
        same `key`: tokenizer, prompts and max lengths), so steps fetch ids instead of running the tokenizer.
        tokenize(texts, role, source) -> ids per text, role "query" or "document"."""

        def add_ids(batch: dict, source: str) -> dict:
            out = {"query_ids": tokenize(batch["query"], "query", source)}
            out["positive_ids"] = tokenize(batch["positive"], "document", source)
            if "negatives" in batch:
                flat = tokenize([n for negs in batch["negatives"] for n in negs], "document", source)
                it = iter(flat)
                out["negatives_ids"] = [[next(it) for _ in negs] for negs in batch["negatives"]]
            return out

        for source, ds in self._train.items():
            # Named by the split's Arrow files (datasets names them from the parquet shards), its columns and the key;
            # datasets' own fingerprint of a select_columns result differs per process, so it would never be reused.
            arrow = sorted(f["filename"] for f in ds.cache_files)
            origin = json.dumps([arrow, ds.column_names, key])
            fingerprint = hashlib.sha256(origin.encode()).hexdigest()[:32]
            cache = Path(arrow[0]).parent / f"tokens-{fingerprint}.arrow" if arrow else None
            with names_path(cache or self.cache_dir or "the datasets cache"):  # a full disk names the cache file
                self._train[source] = ds.map(
                    add_ids, fn_kwargs={"source": source}, batched=True, batch_size=2000,
                    num_proc=num_proc if len(ds) > 20_000 else None,
                    new_fingerprint=fingerprint, desc=f"tokenize {source}", cache_file_name=cache and str(cache),
                )
        self.pretokenized = True

    def heldout_batch(self, source: str, rows: list[int]) -> Batch:
        """Texts of `rows` of a source's dev split (validation scores in-batch negatives only)."""
        got = self._heldout[source][rows]
        return Batch(source, list(rows), list(got["query"]), list(got["positive"]), [[] for _ in rows])

    # ---- opening ------------------------------------------------------------------------------------------
    def _check_negative_counts(self) -> None:
        """Every train row holds at least num_negatives negatives (else they would be silently repeated)."""
        import pyarrow.compute as pc

        for source, ds in self._train.items():
            lengths = pc.list_value_length(ds.data.column("negatives"))
            fewest = pc.min(lengths).as_py()
            if fewest is not None and fewest < self.num_negatives:
                short = int(pc.sum(pc.less(lengths, self.num_negatives)).as_py())
                raise DataError(
                    f"{self._where(source, 'train')}: {short} rows hold fewer than data.num_negatives="
                    f"{self.num_negatives} negatives (the fewest: {fewest}); lower data.num_negatives, mine more "
                    "(`gte mine negatives.k=...`), or set data.repeat_negatives=true to cycle them"
                )

    def _check_sizes(self, batch_rows: int) -> None:
        small = {s: n for s, n in self.train_sizes().items() if n < batch_rows}
        if small:
            raise DataError(
                f"data.train_dir={self.root}: source(s) {small} hold fewer train rows than train.global_batch_size="
                f"{batch_rows}, and every batch comes from one source; write more rows for them (a mined dir that "
                "kept few queries: see its mine_stats.json), leave them out with data.sources=[...], or lower "
                "train.global_batch_size"
            )

    def _where(self, source: str, split: str) -> str:
        return f"{self.root / MANIFEST_FILE} sources.{source}.{split}"

    def _open(self, source: str, split: str, columns: list[str]):
        entry = self.manifest["sources"][source].get(split)
        if not entry or "files" not in entry:
            raise DataError(f"{self._where(source, split)} is missing (expected {{'files': [...], 'rows': N}})")
        files = [self._resolve(f) for f in entry["files"]]
        if not files:
            if split == DEV_SPLIT:
                return _Empty()
            raise DataError(f"{self._where(source, split)}.files is empty: this source has no training rows")
        for f in files:
            _check_shard(f, columns)
        if self.verify_shards:
            check_shards(files, entry, self._where(source, split))
        import datasets

        datasets.disable_progress_bars()
        datasets.logging.set_verbosity_error()
        try:  # a full disk while the Arrow cache is written names the cache folder, not `?`
            with names_path(self.cache_dir or "the datasets cache"):
                ds = datasets.load_dataset(
                    "parquet", data_files=[str(f) for f in files], split="train", cache_dir=self.cache_dir
                ).select_columns(columns)
        except Exception as exc:
            raise _damaged_shard(files, where=self._where(source, split)) or exc
        expected = entry.get("rows")
        if expected is not None and int(expected) != len(ds):
            raise DataError(
                f"{self._where(source, split)}.rows={expected} but its shards hold {len(ds)} rows: the manifest "
                "is stale or a shard was replaced; re-run the step that wrote this pairs dir"
            )
        return ds

    def _resolve(self, name: str) -> Path:
        path = resolve(self.root, name)
        if not path.is_file():
            raise DataError(f"{path} is listed in {self.root / 'manifest.json'} but does not exist")
        return path


class _Empty:
    """A held-out split with no files: zero rows."""

    def __len__(self) -> int:
        return 0


def _check_shard(path: Path, columns: list[str]) -> None:
    """The shard's schema has the columns we read (reads the parquet footer only)."""
    import pyarrow.parquet as pq

    try:
        names = set(pq.read_schema(path).names)
    except Exception as exc:  # noqa: BLE001 - any footer failure means a corrupt shard; name it
        raise DataError(f"{path} is not a readable parquet file ({type(exc).__name__}: {exc})") from exc
    lost = [c for c in columns if c not in names]
    if lost:
        fix = " (hard negatives: run `gte mine` on this pairs dir, or set data.num_negatives=0)" if (
            "negatives" in lost
        ) else ""
        raise DataError(f"{path} has no column(s) {lost}; it has {sorted(names)}{fix}")


def _damaged_shard(files: list[Path], where: str) -> DataError | None:
    """After the Arrow cache failed to build: the first shard whose pages do not decode (a footer can be intact
    over a damaged page, which only a full read finds), as a DataError; None when every shard reads (a bug)."""
    import pyarrow.parquet as pq

    for path in files:
        try:
            for _ in pq.ParquetFile(path).iter_batches(batch_size=8192):  # every page decoded, one batch held
                pass
        except Exception as exc:  # noqa: BLE001 - whatever pyarrow raises for a bad page, the shard is damaged
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            return DataError(f"{path}: a damaged shard ({where}: {reason}); rebuild the pairs dir with `gte prep` "
                             "overwrite=true (or re-run the `gte mine` that wrote it)")
    return None


def sample_negatives(n: int, k: int, seed: int, step: int, source: str, row: int, where: str) -> list[int]:
    """Indices of k negatives among a row's n, deterministic in (seed, step, source, row): the same on every rank
    and after a resume; a row seen again in a later pass gets a fresh draw. Fewer than k candidates are cycled."""
    if not n:
        raise DataError(
            f"{where}: row {row} has an empty negatives list but data.num_negatives={k}; mine negatives for every "
            "row (`gte mine`) or set data.num_negatives=0"
        )
    # A str seed is hashed with sha512 by random.Random: stable across processes, unlike hash().
    rng = random.Random(f"{seed}/{step}/{source}/{row}")
    if n >= k:
        return rng.sample(range(n), k)
    shuffled = rng.sample(range(n), n)
    return [shuffled[i % n] for i in range(k)]
