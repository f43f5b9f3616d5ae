"""`gte mine`: a pairs dir of (query, positive) -> a pairs dir of (query, positive, negatives) triples.

  gte mine configs/mine.yaml input_dir=data/pairs out_dir=data/mined
  CPU smoke run:  gte mine configs/mine.yaml input_dir=data/pairs out_dir=/tmp/mined max_queries_per_source=2000
  On Ray:         gte mine configs/mine.yaml input_dir=data/pairs out_dir=data/mined engine=ray ray.num_workers=4

The engine (data_prep.engine) is chosen once per run: engine=ray embeds the cache's missing shards on a pool of
actors and builds index shards and searches query chunks in Ray tasks; every step is keyed by shard and chunk, so
the output is the same as engine=local's.

Per source (data_prep.mine_sources; negatives come from the same source's documents):
  1. corpus = unique positives of the train split (+ `extra_corpus` files), embedded once through the on-disk
     cache (gte_model.embed_cache: resumable, shared by re-runs and by the consistency filter; it lives beside
     out_dir as `.<out name>.embed_cache` unless embed.cache_dir says otherwise);
  2. queries embedded with the query prompt; faiss finds the top rank_max (+ a pad) docs per query, in chunks
     (data_prep.mine_search, data_prep.knn: exact below index.ivf_threshold docs, IVF above);
  3. the selection rules (data_prep.negatives): exact re-ranking, the rank window, the drops (positive, duplicate,
     ceiling, margin, teacher), seeded sampling of k per query, the random fill;
  4. write shards, mine_stats.json, manifest.json (held-out and BEIR entries point at the input's) and the
     completion record (this module), in a temp folder renamed over out_dir at the end: an interrupted run
     (overwrite=true included) leaves the old output intact. The record holds the config, the input's manifest
     digest and the model's weights digest: a re-run with the same record does nothing; another is refused unless
     overwrite=true.
"""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

from data_prep import paths
from data_prep.engine import open_engine
from data_prep.knn import set_threads
from data_prep.mine_config import MineConfig, NegativesConfig
from data_prep.mine_io import read_extra_corpus, train_rows
from data_prep.mine_sources import mine_one
from gte_model import GTEModel, load_model
from gte_model.core import pairs
from gte_model.core.atomic import build_dir, check_replaceable, write_json
from gte_model.core.config import ConfigError, config_from_argv, dump_config
from gte_model.core.errors import UserError
from gte_model.core.lock import hold
from gte_model.core.memory import peak_rss_mb
from gte_model.core.record import Record, check_done, defaults_of, file_fingerprint, flatten
from gte_model.fingerprint import model_fingerprint
from gte_model.load import weights_digest

MINE_VERSION = 1  # bump when the same config and inputs would give other output (selection or sampling rules)
# Settings that change speed, resources or where the output lives, never its content: a finished run with other
# values is still done.
NO_OUTPUT_EFFECT = frozenset({
    *(f"{p}{k}" for p in ("", "filter.") for k in ("embed.batch_size", "embed.cache_dir", "embed.shard_size",
                                                  "index.num_threads", "index.query_chunk")),
    "teacher.batch_size", "teacher.cache_dir", "teacher.shard_size",
    # permissions, not settings: a model's own code runs only when trusted, and then gives the same vectors
    "trust_remote_code", "teacher.trust_remote_code", "filter.trust_remote_code",
    "out_dir",
    "overwrite",
    "engine",
    "ray",
})


class NothingMined(UserError):
    """No source kept a row: the message says which filter emptied them and which key to change."""


def mine(cfg: MineConfig, model: GTEModel | None = None) -> Path | str:
    """Run mining as configured; returns out_dir (its URL for a remote one). A finished out_dir with the same record
    is left as it is. input_dir and out_dir may be fsspec URLs: a remote input is read from a local copy (its record
    names the URL's listing), a remote output is built locally and uploaded (data_prep.paths).

    `model`: an already loaded GTEModel to use instead of loading `cfg.model` (e.g. the one just trained).
    """
    errors = cfg.validate()
    if errors:
        raise ConfigError("invalid config:\n  " + "\n  ".join(errors))
    if paths.is_remote(cfg.out_dir):  # built in a local folder, then uploaded (data_prep.paths)
        return paths.build_remote(cfg.out_dir, lambda folder: mine(replace(cfg, out_dir=str(folder)), model))
    with contextlib.ExitStack() as stack:
        in_dir = Path(paths.local(cfg.input_dir))
        if paths.is_remote(cfg.input_dir):
            in_dir = Path(paths.fetch(cfg.input_dir, Path(stack.enter_context(tempfile.TemporaryDirectory()))))
        out = Path(paths.local(cfg.out_dir))
        stack.enter_context(hold(out, "out_dir"))  # a second mine of this out_dir refuses, naming this one
        return _mine(cfg, model, in_dir, out)


def _mine(cfg: MineConfig, model: GTEModel | None, in_dir: Path, out: Path) -> Path:
    # the kind only, before any work: whether an earlier mine output is rebuilt is its record's call (check_done)
    check_replaceable(out, "out_dir", "gte mine", overwrite=True)
    manifest = pairs.read_manifest(in_dir, key="input_dir")  # a finished pairs dir (completion record) only
    names = _select_sources(manifest, cfg.sources, in_dir)
    want = mine_record(cfg, model)
    if not cfg.overwrite and check_done(out, want, "overwrite"):
        print(f"gte mine: {out} is complete for this config, input and model; nothing to do", file=sys.stderr)
        return out
    start = time.perf_counter()
    set_threads(cfg.index.num_threads)
    extra = read_extra_corpus(cfg.extra_corpus)
    model = model if model is not None else load_model(cfg.model, trust_remote_code=cfg.trust_remote_code,
                                                       trust_flag="trust_remote_code=true")
    teacher = load_model(cfg.teacher.model, trust_remote_code=cfg.teacher.trust_remote_code,
                         trust_flag="teacher.trust_remote_code=true").eval() if cfg.teacher.model else None
    cache_dir = embed_cache_dir(cfg)
    with open_engine(cfg.engine, cfg.ray) as engine, build_dir(out, "gte mine", "out_dir", overwrite=True) as tmp:
        entries, per_source = {}, {}
        for name in names:
            per_source[name], entry = mine_one(tmp, name, manifest["sources"][name], in_dir, extra, model, cfg,
                                               cache_dir, teacher, engine)
            if entry is not None:
                entries[name] = entry
        if not entries:
            raise NothingMined(_nothing_mined(per_source, cfg))
        _finish(tmp, cfg, entries, per_source, start, want)
    return out


def mine_record(cfg: MineConfig, model: GTEModel | None = None) -> Record:
    """What a mined output is made of: the config (minus NO_OUTPUT_EFFECT; filter keys only when it is on), the
    input's manifest digest, the model's weights digest and the extra corpus files' fingerprints."""
    config = flatten(cfg, skip=NO_OUTPUT_EFFECT)
    if not cfg.filter.enabled:
        config = {k: v for k, v in config.items() if not k.startswith("filter.") or k == "filter.enabled"}
    in_digest = (paths.dir_fingerprint(cfg.input_dir) if paths.is_remote(cfg.input_dir)
                 else pairs.manifest_digest(paths.local(cfg.input_dir)))
    inputs = {"input_dir": in_digest, "model": model_digest(cfg.model, model)}
    inputs |= {f"extra_corpus.{i}": file_fingerprint(p) for i, p in enumerate(cfg.extra_corpus)}
    if cfg.filter.enabled and cfg.filter.model != cfg.model:
        inputs["filter.model"] = model_digest(cfg.filter.model)
    if cfg.teacher.model:
        inputs["teacher.model"] = model_digest(cfg.teacher.model)
    else:  # without a teacher its settings change nothing
        config = {k: v for k, v in config.items() if not k.startswith("teacher.") or k == "teacher.model"}
    return Record("mine", MINE_VERSION, config, inputs, defaults=defaults_of(cfg, NO_OUTPUT_EFFECT))


def model_digest(name: str, model: GTEModel | None = None) -> str:
    """A loaded model: its weights fingerprint; a folder: its weights files' digest (gte_model.load.weights_digest,
    the one definition); a packaged or preset name: the name (it names fixed weights)."""
    if model is not None:
        return f"weights:{model_fingerprint(model)}"
    if Path(name).is_dir():
        digest = weights_digest(name)
        return digest if digest != "missing" else f"files:{file_fingerprint(name)}"
    return f"name:{name}"


def embed_cache_dir(cfg: MineConfig) -> Path:
    """embed.cache_dir, else `.<out name>.embed_cache` beside out_dir: outside the output, so a rebuilt or
    interrupted output keeps its vectors."""
    if cfg.embed.cache_dir:
        return Path(cfg.embed.cache_dir)
    out = Path(cfg.out_dir).resolve()
    return out.parent / f".{out.name}.embed_cache"






def _nothing_mined(per_source: dict, cfg: MineConfig) -> str:
    if all("skipped" in s for s in per_source.values()):
        return (f"input_dir={cfg.input_dir}: the consistency filter dropped every pair of {sorted(per_source)}; "
                "raise filter.top_k or set filter.enabled=false")
    return (f"negatives.min_negatives={cfg.negatives.min_negatives}: no source kept a query with that many "
            "negatives; widen negatives.rank_max, lower negatives.margin or raise negatives.max_score")




def _select_sources(manifest: dict, wanted: list[str], in_dir: Path) -> list[str]:
    """The sources to mine: those named (all if none), refused when none of them has a train row."""
    have = list(manifest["sources"])
    unknown = [s for s in wanted if s not in have]
    if unknown:
        raise UserError(f"sources={unknown}: not in {in_dir}/manifest.json, which has {have}; choose from those")
    names = list(wanted) or have
    if not any(train_rows(manifest["sources"][name]) for name in names):
        raise UserError(f"input_dir={in_dir}: source(s) {names} have no train rows to mine; re-run `gte prep` "
                        "with more data, or choose sources that have train rows")
    return names


def _finish(out: Path, cfg: MineConfig, entries: dict, per_source: dict, start: float, record: Record) -> None:
    stats = {
        "sources": per_source,
        "queries_mined": sum(s["queries_mined"] for s in per_source.values()),
        "wall_s": round(time.perf_counter() - start, 2),
        "peak_rss_mb": peak_rss_mb(),
    }
    write_json(out / "mine_stats.json", stats)
    mined_from = cfg.input_dir if paths.is_remote(cfg.input_dir) else str(Path(paths.local(cfg.input_dir)).resolve())
    extra = {"mined_from": mined_from, "mining": stats, "mine_config": asdict(cfg)}
    pairs.finish(out, entries, extra, record)  # manifest, then the completion record: complete from here on


def main(argv: list[str] | None = None) -> int:
    """`gte mine [CONFIG.yaml] [key=value ...]`; expected failures raise UserError (the `gte` CLI prints one line)."""
    cfg = config_from_argv(MineConfig, argv, __doc__)
    if cfg is None:
        return 0
    print(dump_config(cfg), file=sys.stderr)
    out = mine(cfg)
    stats = json.loads((out / "mine_stats.json").read_text())
    for name, s in stats["sources"].items():
        print(f"{name}: {s['queries_mined']} queries mined, {s['mean_negatives']} negatives each on average, "
              f"{s['queries_short']} with < k, dropped margin={s.get('dropped_margin', 0)} "
              f"ceiling={s.get('dropped_ceiling', 0)} positive={s.get('dropped_positive', 0)}")
    print(f"wall {stats['wall_s']} s, peak RSS {stats['peak_rss_mb']} MB -> {out}")
    return 0


__all__ = ["MineConfig", "NegativesConfig", "main", "mine", "mine_record"]
