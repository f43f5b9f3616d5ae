"""The LLM query client against a chat-completions server written here (http.server in a thread): retries on
429/500/malformed answers/timeouts, bounded concurrency, the on-disk cache, a killed run's resume, the key."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from data_prep.llm_client import FewShot, LLMConfig, LLMError, generate_queries, messages, parse_queries
from data_prep.prep import prep
from data_prep.prep_config import PrepConfig
from gte_model.core.config import load_config
from tests.data_prep.helpers import shard_rows

SECRET = "sk-test-never-write-me"


class FakeEndpoint:
    """Answers POST /v1/chat/completions. `script[passage]` lists what successive requests for that passage get:
    ok | 429 | 500 | 401 | garbage (not JSON) | empty (no query in the content) | slow (answers after 1 s) | hold
    (waits for `release`); past the list's end, ok."""

    def __init__(self) -> None:
        self.script: dict[str, list[str]] = {}
        self.requests: list[str] = []  # the passage of each request, in arrival order
        self.answered: list[str] = []  # passages answered 200 with queries
        self.auth: set[str] = set()
        self.in_flight = self.max_in_flight = 0
        self.holding, self.release = threading.Event(), threading.Event()
        self.lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                endpoint.serve(self, body["messages"][-1]["content"], self.headers.get("Authorization", ""))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def serve(self, handler: BaseHTTPRequestHandler, passage: str, auth: str) -> None:
        with self.lock:
            self.requests.append(passage)
            self.auth.add(auth)
            step = self.script.get(passage, [])
            what = step.pop(0) if step else "ok"
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            time.sleep(0.02)  # keep requests overlapping, so a concurrency bound is exercised
            if what == "hold":
                self.holding.set()
                self.release.wait(30)
                return
            if what == "slow":
                time.sleep(1.0)
            if what in ("429", "500", "401"):
                handler.send_response(int(what))
                if what == "429":
                    handler.send_header("Retry-After", "0")
                handler.end_headers()
                handler.wfile.write(b'{"error": "busy"}')
                return
            content = json.dumps([f"{passage} question", f"what is {passage}"]) if what in ("ok", "slow") else ""
            raw = b"<html>bad gateway</html>" if what == "garbage" else json.dumps(
                {"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.end_headers()
            handler.wfile.write(raw)
            if what in ("ok", "slow"):
                with self.lock:
                    self.answered.append(passage)
        finally:
            with self.lock:
                self.in_flight -= 1


@pytest.fixture
def endpoint():
    server = FakeEndpoint()
    yield server
    server.release.set()
    server.server.shutdown()


def config(endpoint: FakeEndpoint, tmp_path: Path, **kw) -> LLMConfig:
    return LLMConfig(**{"base_url": endpoint.url, "model": "tiny-llm", "queries_per_passage": 2, "backoff_s": 0.0,
                        "cache_dir": str(tmp_path / "cache"), "timeout_s": 5.0, **kw})


def test_answers_are_cached_and_a_rerun_sends_no_request(endpoint, tmp_path):
    passages = [f"passage {i}" for i in range(8)] + ["passage 0"]
    queries, stats = generate_queries(passages, config(endpoint, tmp_path, concurrency=2))
    assert queries[3] == ["passage 3 question", "what is passage 3"] and queries[8] == queries[0]
    assert stats.requests == 8 and stats.cached == 0 and len(endpoint.requests) == 8  # a repeat is asked once
    assert endpoint.max_in_flight <= 2
    again, stats = generate_queries(passages, config(endpoint, tmp_path, concurrency=2))
    assert again == queries and stats.cached == 8 and stats.requests == 0 and len(endpoint.requests) == 8


def test_429_500_and_malformed_answers_are_retried(endpoint, tmp_path):
    endpoint.script = {"a": ["429", "ok"], "b": ["500", "garbage", "ok"], "c": ["empty", "ok"]}
    queries, stats = generate_queries(["a", "b", "c"], config(endpoint, tmp_path))
    assert queries == [["a question", "what is a"], ["b question", "what is b"], ["c question", "what is c"]]
    assert sorted(endpoint.requests) == ["a", "a", "b", "b", "b", "c", "c"]
    assert stats.retries == 4 and stats.failed == 0
    assert any("HTTP 429" in p for p in stats.problems) and any("not a chat completion" in p for p in stats.problems)


def test_a_timeout_is_retried_and_a_passage_that_never_succeeds_gets_no_queries(endpoint, tmp_path):
    endpoint.script = {"slow": ["slow", "ok"], "down": ["500"] * 10}
    queries, stats = generate_queries(["slow", "down"], config(endpoint, tmp_path, timeout_s=0.3, max_retries=2))
    assert queries == [["slow question", "what is slow"], []]
    assert endpoint.requests.count("slow") == 2 and endpoint.requests.count("down") == 3
    assert stats.failed == 1 and any("no answer" in p for p in stats.problems)
    assert not list((tmp_path / "cache").rglob("*.json"))[1:]  # only the answered passage is cached


def test_a_refusal_a_retry_cannot_fix_stops_naming_the_status(endpoint, tmp_path):
    endpoint.script = {"x": ["401"]}
    with pytest.raises(LLMError, match=r"HTTP 401 for model 'tiny-llm'.*\$OPENAI_API_KEY"):
        generate_queries(["x"], config(endpoint, tmp_path))


def test_answers_are_read_from_json_fences_and_numbered_lines():
    assert parse_queries('```json\n["a b", "c"]\n```', 3) == ["a b", "c"]
    assert parse_queries("1. first one\n2) second\n- third\n\n* fourth", 3) == ["first one", "second", "third"]
    assert parse_queries('{"queries": 1}', 3) == [] and parse_queries("", 3) == []


def test_the_key_is_sent_from_the_environment_and_written_nowhere(endpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("MY_LLM_KEY", SECRET)
    generate_queries(["p1", "p2"], config(endpoint, tmp_path, api_key_env="MY_LLM_KEY"))
    assert endpoint.auth == {f"Bearer {SECRET}"}
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) == 2 and not any(SECRET.encode() in p.read_bytes() for p in written)


def test_a_killed_run_resumes_without_asking_an_answered_passage_again(endpoint, tmp_path):
    passages = [f"doc {i}" for i in range(6)]
    endpoint.script = {"doc 3": ["hold"]}  # the 4th request waits until the run is killed
    cfg = config(endpoint, tmp_path, concurrency=1)
    code = ("import json, sys; from data_prep.llm_client import LLMConfig, generate_queries; "
            "generate_queries(json.loads(sys.argv[1]), LLMConfig(**json.loads(sys.argv[2])))")
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-c", code, json.dumps(passages), json.dumps(cfg.__dict__)], cwd=root,
                            env={**os.environ, "PYTHONPATH": str(root)})
    try:
        assert endpoint.holding.wait(60), "the run never reached the 4th passage"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    endpoint.release.set()
    first = list(endpoint.answered)
    assert first == ["doc 0", "doc 1", "doc 2"]
    sent_before = len(endpoint.requests)
    queries, stats = generate_queries(passages, cfg)
    resumed = endpoint.requests[sent_before:]
    assert sorted(resumed) == ["doc 3", "doc 4", "doc 5"] and not set(resumed) & set(first)
    assert stats.cached == 3 and all(q == [f"{p} question", f"what is {p}"] for p, q in zip(passages, queries))


@pytest.mark.integration
def test_prep_of_documents_with_the_llm_maker_pairs_each_passage_with_its_answers(endpoint, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(12):
        (docs / f"page{i}.txt").write_text(" ".join(f"word{i}x{j}" for j in range(4)))  # answers no near dups
    cache = tmp_path / "cache"
    files = (f"files=[{{name: pages, path: {docs}, kind: documents, documents: {{makers: [llm], llm: {{base_url: "
             f"'{endpoint.url}', model: tiny-llm, queries_per_passage: 2, cache_dir: {cache}}}}}}}]")
    cfg = load_config(PrepConfig, None, ["sources=[]", files, f"out_dir={tmp_path}/pairs",
                                         "split.heldout_fraction=0.25", "decontaminate.stsb_test=false"])
    out = prep(cfg)
    entry = json.loads((out / "manifest.json").read_text())["sources"]["pages"]
    rows = shard_rows(out, entry["train"]["files"]) + shard_rows(out, entry["heldout"]["files"])
    assert len(endpoint.requests) == 12 and len(rows) == 24  # 2 queries per page, every page asked once
    assert all(r["query"] in (f"{r['positive']} question", f"what is {r['positive']}") for r in rows)
    assert {r["key"] for r in rows} == {f"page{i}.txt" for i in range(12)}
    prep(replace(cfg, out_dir=str(tmp_path / "again")))
    assert len(endpoint.requests) == 12  # a second prep reads every answer from the cache


def test_the_prompt_holds_the_few_shot_examples_before_the_passage():
    default = messages(LLMConfig(model="m", queries_per_passage=2), "my passage")
    assert [m["role"] for m in default] == ["system", "user", "assistant", "user"]
    assert "write 2 different" in default[0]["content"] and default[-1]["content"] == "my passage"
    assert len(json.loads(default[2]["content"])) == 2  # the example shows as many queries as asked for
    own = messages(LLMConfig(model="m", few_shot=[FewShot("valve manual", ["open valve"])]), "p")
    assert own[1:3] == [{"role": "user", "content": "valve manual"},
                        {"role": "assistant", "content": '["open valve"]'}]
