"""gpu_bench.json and gpu_bench.md from benchmarks/gpu/bench.py's results: tables, ratios, MFU and the issue's
targets (>= 2x sentence-transformers' pairs/s, >= 40% MFU for gte-base at 512, global batch 65,536 cached)."""

from __future__ import annotations

import json
from pathlib import Path

TARGET_SPEEDUP = 2.0
TARGET_MFU = 0.40
TARGET_BATCH = 65536


def _fmt(value, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _status(result: dict) -> str | None:
    for key in ("error", "skipped"):
        if key in result:
            return f"{key}: {result[key]}"
    return None


def add_mfu(report: dict) -> None:
    peak = report["environment"].get("peak_bf16_tflops")
    for result in report["results"].values():
        if "tflops" in result:
            result["mfu"] = result["tflops"] / peak if peak else None


def throughput_table(results: dict) -> list[str]:
    lines = ["| run | model | max len | pairs/s | tokens/s | useful TFLOP/s | MFU | timed steps |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in results.items():
        if not name.startswith(("ours", "st/")):
            continue
        system, model, max_len = name.split("/")
        status = _status(r)
        if status:
            lines.append(f"| {system} | {model} | {max_len} | {status[:80]} | | | | |")
            continue
        mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "-"
        lines.append(f"| {system} | {model} | {max_len} | {_fmt(r['pairs_per_s'])} | {_fmt(r['tokens_per_s'])} | "
                     f"{_fmt(r['tflops'], 1)} | {mfu} | {r['steps']} |")
    return lines


def peer_settings(results: dict) -> list[str]:
    """What the peer ran with (benchmarks/peer_settings.py), one line per distinct setting."""
    seen = {json.dumps(r["peer"], sort_keys=True): r["peer"] for r in results.values() if "peer" in r}
    lines = [f"- st: attention {p['attention']}, padding-free {'yes' if p['padding_free'] else 'no'}"
             + (f" ({p['fallback']})" if p.get("fallback") else "") for p in seen.values()]
    return [*lines, ""] if lines else []


def ratios(results: dict) -> dict:
    """ours-packed / st and ours-packed / ours-padded pairs/s per (model, max len)."""
    out = {}
    for name, r in results.items():
        if not name.startswith("ours-packed/") or "pairs_per_s" not in r:
            continue
        _, model, max_len = name.split("/")
        key = f"{model}/{max_len}"
        for other in ("st", "ours-padded"):
            o = results.get(f"{other}/{key}", {})
            if "pairs_per_s" in o:
                out[f"{key} packed/{other}"] = r["pairs_per_s"] / o["pairs_per_s"]
    return out


def targets(report: dict) -> list[str]:
    results, rat = report["results"], report["ratios"]
    lines = []
    vs_st = {k: v for k, v in rat.items() if k.endswith("/st")}
    if vs_st:
        worst = min(vs_st, key=vs_st.get)
        ok = "met" if vs_st[worst] >= TARGET_SPEEDUP else "NOT met"
        lines.append(f"- >= {TARGET_SPEEDUP:.0f}x sentence-transformers' pairs/s: {ok} (lowest {vs_st[worst]:.2f}x, "
                     f"{worst.removesuffix(' packed/st')})")
    base = results.get("ours-packed/gte-base/512", {})
    if base.get("mfu") is not None:
        ok = "met" if base["mfu"] >= TARGET_MFU else "NOT met"
        lines.append(f"- >= {100 * TARGET_MFU:.0f}% MFU, gte-base at 512: {ok} ({100 * base['mfu']:.1f}%)")
    big = results.get(f"cached-memory/{TARGET_BATCH}", {})
    if big:
        ok = "met" if "peak_gib" in big else "NOT met"
        lines.append(f"- global batch {TARGET_BATCH:,} in the cached step: {ok} "
                     f"({_status(big) or _fmt(big['peak_gib'], 1) + ' GiB peak'})")
    return lines


def write_report(report: dict, out: Path) -> str:
    """Write out/gpu_bench.json and out/gpu_bench.md; returns the markdown."""
    add_mfu(report)
    report["ratios"] = ratios(report["results"])
    env, results = report["environment"], report["results"]
    smoke = ["**Smoke run (--smoke): a tiny model on the CPU; the figures only show that the benchmark runs.**", ""]
    md = [f"# GPU benchmark: {env['device']}", "", *(smoke if report.get("smoke") else []),
          f"torch {env['torch']} (CUDA {env['cuda']}), transformers {env['transformers']}, sentence-transformers "
          f"{env['sentence_transformers']}; attention: {env['attention_train']} (training, dropout on), "
          f"{env['attention_eval']} (no dropout); peak bf16 {_fmt(env['peak_bf16_tflops'])} TFLOP/s; "
          f"{report['total_s']} s in all.", "",
          "## Training throughput (bf16, batch " + str(report["plan"]["batch"]) + " pairs, no cache)", "",
          *throughput_table(results), "", *peer_settings(results), "## Ratios (pairs/s)", ""]
    md += [f"- {k}: {v:.2f}x" for k, v in report["ratios"].items()] or ["- none measured"]
    md += ["", "## Cached step (gte loss, packed, bf16)", "",
           "| global batch | peak GiB | seconds | pairs/s |", "| --- | --- | --- | --- |"]
    for name, r in results.items():
        if name.startswith("cached-memory/"):
            batch = name.split("/")[1]
            status = _status(r)
            md.append(f"| {batch} | {status[:100]} | | |" if status else
                      f"| {batch} | {_fmt(r['peak_gib'], 2)} | {_fmt(r['seconds'], 2)} | {_fmt(r['pairs_per_s'])} |")
    enc = results.get("encode", {})
    md += ["", "## Encode", "", f"- GTEModel.encode, bf16, batch 256: {_status(enc) or _fmt(enc.get('docs_per_s'))}"
           + ("" if _status(enc) else f" docs/s ({enc['model']}, {enc['docs']} docs)")]
    md += ["", "## Targets (issue 13)", "", *(targets(report) or ["- nothing measured"]), ""]
    text = "\n".join(md)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_bench.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "gpu_bench.md").write_text(text)
    return text
