"""Queries written by an LLM for each passage, through any OpenAI-compatible chat-completions endpoint (a local vLLM,
llama.cpp server or Ollama; a hosted API), with an on-disk cache so that a killed run loses nothing.

  from data_prep.llm_client import LLMConfig, generate_queries
  queries, stats = generate_queries(passages, LLMConfig(base_url="http://localhost:8000/v1", model="qwen2.5-7b"))

1. Each passage becomes one chat: a system instruction, the few-shot examples as user/assistant turns, then the
   passage; the model answers a JSON list of `queries_per_passage` queries (numbered or bulleted lines are read too).
2. At most `concurrency` requests are in flight. A 429, a 5xx, a timeout, a dropped connection or a malformed answer
   (a body that is not a chat completion, or content holding no query) is retried up to `max_retries` times after
   backoff_s x 2^attempt seconds (a Retry-After header wins); any other 4xx stops the run naming status and body.
3. Every answer is written to `cache_dir` (one file per passage, renamed into place) keyed by (model, prompt,
   passage) before it counts, so a re-run, or the run after a kill, sends no request whose answer it has.
The API key is read from the environment variable named by `api_key_env` when a request is sent; it is never part
of a config, a cache key or a file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from gte_model.core.atomic import write_json
from gte_model.core.config import bounded
from gte_model.core.errors import UserError

SYSTEM_PROMPT = ("You write search queries. Given a passage, write {n} different short queries a user might type "
                 "to find it: questions or keyword queries, answerable by the passage, not copying its sentences. "
                 "Answer with a JSON list of {n} strings and nothing else.")
FEW_SHOT = [{"passage": "To reset the router, hold the button on its back for ten seconds until the light blinks "
                        "orange; settings return to factory defaults.",
             "queries": ["how to factory reset router", "router light blinking orange after holding button",
                         "restore default router settings"]}]
_LIST_ITEM = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s*")
_RETRY_STATUS = frozenset({408, 409, 429}) | frozenset(range(500, 600))


class LLMError(UserError):
    """The endpoint refused a request in a way a retry cannot fix (wrong URL, key or model)."""


class _Retryable(Exception):
    def __init__(self, why: str, wait_s: float | None = None) -> None:
        super().__init__(why)
        self.wait_s = wait_s


@dataclass
class FewShot:
    passage: str = ""  # an example passage
    queries: list[str] = field(default_factory=list)  # the queries the model should write for it


@dataclass
class LLMConfig:
    base_url: str = "http://localhost:8000/v1"  # the endpoint; /chat/completions is appended
    model: str = ""  # the model name the endpoint serves
    api_key_env: str = "OPENAI_API_KEY"  # the environment variable holding the key (unset: no Authorization)
    queries_per_passage: int = bounded(3, ge=1)  # queries asked for (and kept, at most) per passage
    system_prompt: str = SYSTEM_PROMPT  # {n} = queries_per_passage
    # few-shot examples, each {passage: text, queries: [text, ...]}, shown before every passage; [] = FEW_SHOT's one
    few_shot: list[FewShot] = field(default_factory=list)
    temperature: float = bounded(0.7, ge=0)  # sampling temperature sent with each request
    max_tokens: int = bounded(256, ge=1)  # the longest answer the endpoint may write, in its tokens
    concurrency: int = bounded(4, ge=1)  # requests in flight at once
    max_retries: int = bounded(5, ge=0)  # retries of one passage after a 429/5xx/timeout/malformed answer
    backoff_s: float = bounded(1.0, ge=0)  # first retry wait; doubles each retry (capped at 60 s)
    timeout_s: float = bounded(60.0, gt=0)  # per request
    cache_dir: str = ".cache/gte-llm"  # answers, one JSON file per (model, prompt, passage)


@dataclass
class LLMStats:
    passages: int = 0
    cached: int = 0  # answered from the cache, no request sent
    requests: int = 0  # sent, retries included
    retries: int = 0
    failed: int = 0  # passages left without queries after every retry
    problems: list[str] = field(default_factory=list)  # the first few reasons for retries and failures
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, problem: str = "", **counts: int) -> None:
        """Count from any worker thread."""
        with self._lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)
            if problem and len(self.problems) < 10:
                self.problems.append(problem)


def messages(cfg: LLMConfig, passage: str) -> list[dict]:
    """The chat for one passage (step 1)."""
    n = cfg.queries_per_passage
    chat = [{"role": "system", "content": cfg.system_prompt.format(n=n)}]
    for example in cfg.few_shot or [FewShot(**e) for e in FEW_SHOT]:
        chat += [{"role": "user", "content": example.passage},
                 {"role": "assistant", "content": json.dumps(list(example.queries[:n]), ensure_ascii=False)}]
    return chat + [{"role": "user", "content": passage}]


def cache_key(cfg: LLMConfig, passage: str) -> str:
    """sha256 of (model, the whole prompt, sampling settings, passage): another prompt is another answer."""
    what = [cfg.model, messages(cfg, passage), cfg.queries_per_passage, cfg.temperature, cfg.max_tokens]
    return hashlib.sha256(json.dumps(what, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def parse_queries(content: str, n: int) -> list[str]:
    """Up to n distinct queries from an answer: a JSON list of strings (code fences allowed), else one per line."""
    text = content.strip().removeprefix("```json").removeprefix("```").removesuffix("```").strip()
    try:
        value = json.loads(text)
        items = value if isinstance(value, list) else []
    except json.JSONDecodeError:
        items = [_LIST_ITEM.sub("", line).strip().strip('"') for line in text.splitlines()]
    queries = [" ".join(q.split()) for q in items if isinstance(q, str) and q.strip()]
    return list(dict.fromkeys(queries))[:n]


def generate_queries(passages: list[str], cfg: LLMConfig) -> tuple[list[list[str]], LLMStats]:
    """The queries of each passage (in order; [] where every try failed) and what it took."""
    if not cfg.model:
        raise LLMError("llm.model is not set: name the model the endpoint serves (llm.model=...)")
    unique = list(dict.fromkeys(passages))  # one request (and one cache file) per distinct passage
    stats = LLMStats(passages=len(unique))
    root = Path(cfg.cache_dir)
    with ThreadPoolExecutor(max_workers=cfg.concurrency) as pool:
        answers = dict(zip(unique, pool.map(lambda p: _queries_of(p, cfg, root, stats), unique)))
    return [answers[p] for p in passages], stats


def _queries_of(passage: str, cfg: LLMConfig, root: Path, stats: LLMStats) -> list[str]:
    key = cache_key(cfg, passage)
    path = root / key[:2] / f"{key}.json"
    if path.is_file():
        stats.add(cached=1)
        return json.loads(path.read_text())["queries"]
    for attempt in range(cfg.max_retries + 1):
        stats.add(requests=1)
        try:
            queries = parse_queries(_complete(cfg, messages(cfg, passage)), cfg.queries_per_passage)
            if not queries:
                raise _Retryable("the answer holds no query")
        except _Retryable as exc:
            if attempt == cfg.max_retries:
                stats.add(str(exc), failed=1)
                return []
            stats.add(str(exc), retries=1)
            time.sleep(exc.wait_s if exc.wait_s is not None else min(60.0, cfg.backoff_s * 2**attempt))
            continue
        write_json(path, {"model": cfg.model, "queries": queries})  # step 3: cached before it counts
        return queries
    raise AssertionError("unreachable")


def _complete(cfg: LLMConfig, chat: list[dict]) -> str:
    """One chat-completions request -> the answer's content; _Retryable on what a retry may fix."""
    body = json.dumps({"model": cfg.model, "messages": chat, "temperature": cfg.temperature,
                       "max_tokens": cfg.max_tokens}).encode()
    headers = {"Content-Type": "application/json"}
    key = os.environ.get(cfg.api_key_env, "")
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(cfg.base_url.rstrip("/") + "/chat/completions", body, headers)
    try:
        with urllib.request.urlopen(request, timeout=cfg.timeout_s) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:200].decode("utf-8", "replace")
        if exc.code in _RETRY_STATUS:
            after = exc.headers.get("Retry-After")
            raise _Retryable(f"HTTP {exc.code}: {detail}", float(after) if after and after.isdigit() else None
                             ) from None
        raise LLMError(f"llm.base_url={cfg.base_url}: HTTP {exc.code} for model {cfg.model!r}: {detail}; check the "
                       f"URL, the model name and the key in ${cfg.api_key_env}") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        raise _Retryable(f"no answer ({getattr(exc, 'reason', exc)})") from None
    try:
        content = json.loads(raw)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise _Retryable(f"not a chat completion: {raw[:120]!r}") from None
    if not isinstance(content, str):
        raise _Retryable("the answer's content is not text")
    return content
