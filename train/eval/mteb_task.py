"""MTEB (mteb >= 2) run by its own evaluation code: public tasks whose data is already local, and our BEIR folders
as local retrieval tasks.

- `mteb:<TaskName>`: a public MTEB task. Its dataset must already be in the local Hugging Face cache: that is
  checked with no network access before the model loads (check_public_task), and a task whose data is not there is
  an EvalError naming the task, at once, with or without a network: gte eval never starts a dataset download.
- `mteb-beir`: every BEIR set given with --beir / --data, each run as a custom mteb retrieval task
  (local_retrieval_task: an AbsTaskRetrieval filled from load_beir, so the texts are exactly the ones our own
  evaluator reads). mteb's nDCG@10 / MRR@10 / Recall@100 are reported under our metric names, next to `beir`'s.
  They agree to 1e-4 (tests/train/test_evaluate.py, on a set with exact ties and self-matches): both rank with
  pytrec_eval's rule (score, then doc id, both descending) and neither drops a document whose id is the query's
  (ignore_identical_ids is off in both). What is left: mteb rounds its scores to 5 decimals, and two different
  texts whose scores differ only in float noise may swap places, as the two searches compute cosines differently.

The model goes in as a SentenceTransformer loaded from the export, which mteb drives natively: its "query" and
"document" prompts apply as in training. Results are not written to mteb's cache (~/.cache/mteb) nor read from it.
"""

from __future__ import annotations

from pathlib import Path

import mteb
from datasets import Dataset
from huggingface_hub import snapshot_download
from mteb.abstasks.retrieval import AbsTaskRetrieval
from mteb.abstasks.task_metadata import TaskMetadata

from train.eval.beir_io import load_beir
from train.eval.errors import EvalDataMissing, EvalError
from train.eval.retrieval import MEASURES

# Our metric names -> the keys of mteb's retrieval scores.
MTEB_KEYS = {name: name.replace("@", "_at_") for name in MEASURES}


class LocalRetrievalTask(AbsTaskRetrieval):
    """A BEIR-format folder as an mteb retrieval task: load_data reads the folder, nothing comes from the Hub.
    Made by local_retrieval_task, which gives each folder a subclass of its own."""

    folder: Path
    split: str

    def load_data(self, num_proc: int | None = None, **kwargs) -> None:
        corpus, queries, qrels = load_beir(self.folder, self.split)
        # load_beir already joined title and text; an empty title keeps mteb from joining them again.
        docs = Dataset.from_list([{"id": i, "title": "", "text": t} for i, t in corpus.items()])
        asked = Dataset.from_list([{"id": i, "text": t} for i, t in queries.items()])
        self.dataset = {"default": {self.split: {"corpus": docs, "queries": asked, "relevant_docs": qrels,
                                                 "top_ranked": None}}}
        self.data_loaded = True


def local_retrieval_task(name: str, folder: str | Path, split: str = "test") -> LocalRetrievalTask:
    """The task for one folder. mteb reads `metadata` from the class (unload_data drops an instance's copy), so the
    folder's metadata goes on a subclass made here."""
    metadata = TaskMetadata(
        name=f"LocalBEIR-{name}", description=f"BEIR-format folder {folder}", type="Retrieval",
        dataset={"path": str(folder), "revision": "local"}, category="t2t", modalities=["text"],
        eval_splits=[split], eval_langs=["eng-Latn"],  # a required field; the scores do not depend on it
        main_score="ndcg_at_10",
    )
    attrs = {"metadata": metadata, "folder": Path(folder), "split": split}
    return type("LocalBEIRTask", (LocalRetrievalTask,), attrs)()


def check_public_task(task_name: str) -> None:
    """EvalError unless task_name is an MTEB task whose dataset is in the local Hugging Face cache (no network)."""
    try:
        task = mteb.get_task(task_name)
    except KeyError as exc:
        raise EvalError(f"--tasks mteb:{task_name}: not an MTEB task ({exc.args[0]}); see mteb.get_tasks() for "
                        "the names") from exc
    data = task.metadata.dataset
    try:
        snapshot_download(repo_id=data["path"], repo_type="dataset", revision=data.get("revision"),
                          local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - huggingface_hub raises one of several "not cached" errors
        raise EvalDataMissing(f"--tasks mteb:{task_name}: its data ({data['path']}) is not local and gte eval "
                              "downloads nothing; fetch it once online (python -c \"import mteb; "
                              f"mteb.get_task('{task_name}').load_data()\") or leave mteb:{task_name} out of --tasks"
                              ) from exc


def evaluate_public(st_model, task_name: str, batch_size: int = 64) -> dict:
    """{"main_score", "main_metric"} of one public MTEB task (check_public_task first)."""
    task = mteb.get_task(task_name)
    result = _run(st_model, task, batch_size)
    return {"main_score": float(result.get_score()), "main_metric": task.metadata.main_score}


def evaluate_local_beir(st_model, name: str, folder: str | Path, batch_size: int = 64) -> dict:
    """mteb's nDCG@10, MRR@10 and Recall@100 on one BEIR-format folder, under our metric names."""
    task = local_retrieval_task(name, folder)
    scores = _run(st_model, task, batch_size).scores[task.split][0]
    return {ours: float(scores[key]) for ours, key in MTEB_KEYS.items()}


def _run(st_model, task, batch_size: int):
    # cache=None: a result is computed now, never read back from (or left in) ~/.cache/mteb.
    results = mteb.evaluate(st_model, task, encode_kwargs={"batch_size": batch_size}, cache=None,
                            show_progress_bar=False)
    return results.task_results[0]
