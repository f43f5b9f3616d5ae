"""The `gte mine` config schema and its validation: every problem a later step would reject, in override spelling.

`validate()` reads only the config and changes nothing; the input pairs dir is checked when mining starts (in a
pipeline it does not exist yet when the config is loaded).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from data_prep.engine import ENGINE_HINT, ENGINES, RayConfig
from data_prep.filter import FilterConfig
from data_prep.knn import IndexConfig
from data_prep.mine_io import EXTRA_SUFFIXES
from gte_model import DEFAULT_MODEL
from gte_model.core.config import bounded, field_problems
from gte_model.embed_config import EmbedConfig, TeacherConfig


@dataclass
class NegativesConfig:
    """Which candidates become negatives."""

    k: int = bounded(7, ge=1)  # negatives per query (nomic-embed found ~7 better than GTE's 1)
    rank_min: int = 3  # skip corpus ranks < rank_min (0-based, the positive counted): the very top holds false negs
    rank_max: int = 100  # candidates come from corpus ranks < rank_max
    margin: float = 0.05  # drop candidates with score > positive's score - margin (cosine units)
    max_score: float = 0.95  # drop candidates with cosine above this ceiling (near-paraphrases of the query)
    # random: uniform among the survivors (nomic); top: the best-ranked survivors
    strategy: str = bounded("random", choices=("random", "top"))
    min_negatives: int = 1  # rows with fewer surviving negatives are left out of the output (counted in stats)
    # "random": a row left with fewer than min_negatives gets random documents of its source instead (those scored
    # below its positive by the margin). Such rows are the queries the model gets most wrong (the positive ranks
    # below the window); dropping them trains stage 2 on the easy ones. "none": drop them.
    fill: str = bounded("random", choices=("none", "random"))
    # extra faiss candidates so exact re-ranking is stable at the rank_max boundary
    search_pad: int = bounded(16, ge=0)
    # positive-aware filtering (NV-Retriever's TopK-PercPos), with a teacher only: a candidate is kept only if the
    # teacher scores it below teacher_ratio x its score of the positive AND below that score - teacher_margin
    teacher_ratio: float = bounded(0.95, gt=0, le=1, hint="NV-Retriever: 0.95")
    teacher_margin: float = 0.0  # see teacher_ratio: the absolute margin below the positive's teacher score
    seed: int = 0  # sampling seed (with the row's query+positive hash)

    def validate(self, prefix: str = "negatives.") -> list[str]:
        errors = []
        if not 0 <= self.rank_min < self.rank_max:
            errors.append(f"{prefix}rank_min={self.rank_min}, {prefix}rank_max={self.rank_max}: need "
                          f"0 <= rank_min < rank_max, e.g. {prefix}rank_min=3 {prefix}rank_max=100")
        elif self.rank_max - self.rank_min < self.k:
            errors.append(f"{prefix}k={self.k}: exceeds the window [{self.rank_min}, {self.rank_max}); widen it "
                          f"({prefix}rank_max) or lower {prefix}k")
        if not 0 <= self.min_negatives <= self.k:
            errors.append(f"{prefix}min_negatives={self.min_negatives}: must be in [0, k={self.k}]")
        return errors


@dataclass
class MineConfig:
    """`gte mine`: input pairs dir + model -> output pairs dir with the negatives column filled."""

    input_dir: str = ""  # pairs dir written by `gte prep` (manifest.json)
    out_dir: str = ""  # where the mined pairs dir is written
    model: str = DEFAULT_MODEL  # preset, packaged name or folder (gte_model.load_model)
    trust_remote_code: bool = False  # run the model folder's own code (config.json auto_map): read it first
    sources: list[str] = field(default_factory=list)  # sources to mine; empty = every source of the input
    extra_corpus: list[str] = field(default_factory=list)  # .txt (a doc per line) / .jsonl ("text") / .parquet
    # 0 = every train row; else a deterministic (seeded) sample of this many
    max_queries_per_source: int = bounded(0, ge=0, hint="0 = all")
    # candidate documents per source: the source's unique train positives, 0 = all of them, N = a seeded sample
    # (the sampled queries' own positives are always in the corpus)
    max_corpus_per_source: int = bounded(0, ge=0, hint="0 = all")
    rows_per_shard: int = bounded(100_000, ge=1)  # rows per output parquet file
    overwrite: bool = False  # rebuild the output even when it is complete (or was built from another config)
    negatives: NegativesConfig = field(default_factory=NegativesConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)  # optional consistency filter before mining
    # local | ray (data_prep.engine): embedding by actors, search in Ray tasks; the output does not depend on it.
    # The consistency filter runs in this process under both.
    engine: str = bounded("local", choices=ENGINES, hint=ENGINE_HINT)
    ray: RayConfig = field(default_factory=RayConfig)  # engine=ray only: the cluster and how many workers
    # a stronger model that vets the candidates (negatives.teacher_ratio / teacher_margin) and whose scores of the
    # positive and of each kept negative are stored in the rows (column teacher_scores); its vectors are cached in
    # teacher.cache_dir ("" = the embed cache), where training's distillation finds them
    teacher: TeacherConfig = field(default_factory=TeacherConfig)

    def validate(self) -> list[str]:
        """Every problem, one line each (`key=value: problem; fix`); [] when the config is sound. Pure."""
        errors = []
        if not self.input_dir:
            errors.append("input_dir is not set: pass input_dir=<pairs dir written by gte prep>")
        if not self.out_dir:
            errors.append("out_dir is not set: pass out_dir=<folder for the mined pairs>")
        elif self.input_dir and (_same_or_inside(Path(self.out_dir), Path(self.input_dir))
                                 or _same_or_inside(Path(self.input_dir), Path(self.out_dir))):
            errors.append(f"out_dir={self.out_dir}: is input_dir={self.input_dir}, inside it or around it; mining "
                          "writes a new pairs dir beside its input, choose another out_dir")
        if not self.model:
            errors.append("model is not set: pass model=<preset, packaged name or export folder>")
        for i, name in enumerate(self.extra_corpus):
            if Path(name).suffix not in EXTRA_SUFFIXES:
                errors.append(f"extra_corpus.{i}={name}: unknown file type; use .txt (a doc per line), "
                              ".jsonl ('text') or .parquet")
        if self.filter.enabled and not self.filter.model:
            errors.append("filter.model is not set: name the model that filters, or set filter.enabled=false")
        if self.teacher.kind == "cross":
            errors.append("teacher.kind=cross: mining vets negatives by a teacher's vectors, which a cross-encoder "
                          "has not (it teaches training only: stage2.teacher in gte run); set teacher.kind=bi")
        return field_problems(self) + errors + self.negatives.validate()


def _same_or_inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents
