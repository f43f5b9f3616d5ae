"""The prep stats report: report.md (counts per source per step) and lengths.png (token-length histograms)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

COLUMNS = [
    ("read", "read"),
    ("cleaned", "after cleaning"),
    ("exact", "exact dups (within/across)"),
    ("near", "near dups (within/across)"),
    ("after_dedup", "after dedup"),
    ("heldout_pairs", "held-out pairs"),
    ("beir", "BEIR queries/corpus"),
    ("decontaminated", "decontaminated"),
    ("train", "train"),
    ("p", "p(α=0.5)"),
]


def _row(name: str, s: dict, probability: float | None) -> list[str]:
    beir = s["heldout_beir"]
    values = {
        "exact": f"{s['exact_dups_within']}/{s['exact_dups_across']}",
        "near": f"{s['near_dups_within']}/{s['near_dups_across']}",
        "beir": f"{beir['queries']}/{beir['corpus']}",
        "p": f"{probability:.3f}" if probability is not None else "-",
    }
    return [name] + [values.get(key, str(s.get(key, ""))) for key, _ in COLUMNS]


def render_markdown(manifest: dict) -> str:
    stats = manifest["stats"]
    probs = manifest.get("alpha", {}).get("probabilities", {})
    lines = ["# Prep report", "", "| source | " + " | ".join(title for _, title in COLUMNS) + " |",
             "|---" * (len(COLUMNS) + 1) + "|"]
    totals = {key: 0 for key in ("read", "cleaned", "after_dedup", "heldout_pairs", "decontaminated", "train")}
    for name, s in stats.items():
        lines.append("| " + " | ".join(_row(name, s, probs.get(name))) + " |")
        for key in totals:
            totals[key] += s[key]
    lines += ["", "Totals: " + ", ".join(f"{k} {v}" for k, v in totals.items()), ""]
    drops = {name: s["dropped_cleaning"] for name, s in stats.items() if s["dropped_cleaning"]}
    if drops:
        lines.append("Dropped while cleaning: " + "; ".join(
            f"{name}: " + ", ".join(f"{why} {n}" for why, n in d.items()) for name, d in drops.items()))
    skipped = {name: r for name, r in manifest.get("readers", {}).items() if r.get("skipped")}
    for name, r in skipped.items():
        lines.append(f"Reader skipped {r['skipped']} malformed rows of {name}; first: " + "; ".join(r["problems"][:3]))
    rss = manifest.get("peak_rss_mb", {})
    private = manifest.get("peak_private_mb", {})
    private_text = ", ".join(f"{who.replace('_', ' ')} {mb} MiB" for who, mb in private.items())
    steps = manifest.get("step_seconds", {})
    step_rss = manifest.get("step_peak_rss_mb", {})
    config = manifest.get("config", {})
    engine = config.get("engine", "local")
    if engine == "ray":
        ray = config.get("ray", {})
        engine += f" ({ray.get('num_workers')} workers, {ray.get('address') or 'a local Ray'})"
    lines += [
        f"Engine: {engine}",
        f"Evaluation texts used for decontamination: {manifest.get('eval_texts', 0)}",
        f"Wall time: {manifest.get('wall_time_s', 0)} s; peak RSS: main {rss.get('main')} MiB, "
        f"largest worker {rss.get('largest_worker')} MiB" + (f"; peak private: {private_text}" if private else ""),
        "Steps (seconds, peak RSS so far in MiB): "
        + ", ".join(f"{name} {sec} s {step_rss.get(name, '?')} MiB" for name, sec in steps.items()),
        "",
        "![token lengths](lengths.png)",
        "",
    ]
    return "\n".join(lines)


def plot_lengths(path: Path, lengths: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """One row per source: histograms of query and positive lengths (whitespace tokens) of the train pairs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n, (q, _) in lengths.items() if len(q)]
    if not names:
        return
    fig, axes = plt.subplots(len(names), 2, figsize=(9, 2.2 * len(names)), squeeze=False)
    for row, name in enumerate(names):
        for col, (label, values) in enumerate(zip(("query", "positive"), lengths[name])):
            ax = axes[row][col]
            ax.hist(values, bins=min(50, max(5, int(values.max()) - int(values.min()) + 1)), color=f"C{col}")
            ax.set_title(f"{name}: {label} tokens (median {int(np.median(values))})", fontsize=9)
            ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write_report(out_dir: Path, manifest: dict, staged, train: np.ndarray) -> Path:
    out_dir = Path(out_dir)
    lengths = {}
    for sid, name in enumerate(staged.names):
        mine = train & (staged.source_ids == sid)
        lengths[name] = (staged.q_len[mine], staged.p_len[mine])
    plot_lengths(out_dir / "lengths.png", lengths)
    path = out_dir / "report.md"
    path.write_text(render_markdown(manifest))
    return path
