"""What a user reads beside the numbers: metrics.png says why validation loss sits apart from train loss, and the
model card does not claim two stages for a one-stage run."""

from __future__ import annotations

import json

from gte_model.card import render_card
from train.metrics import plot_losses


def test_loss_plot_says_why_validation_loss_differs_from_train_loss():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    train = [{"step": s, "loss": 1.0 + 1.0 / s} for s in range(1, 21)]
    plot_losses(ax, train, [{"step": 20, "val_loss": 5.8}])
    note = ax.get_legend().get_title().get_text()
    assert "in-batch negatives only" in note and "no hard negatives" in note and "compare it with itself" in note
    plot_losses(ax2 := fig.add_subplot(2, 1, 2), train, [])  # no validation: no note
    assert ax2.get_legend().get_title().get_text() == ""
    plt.close(fig)


def test_loss_plot_draws_the_dev_ndcg_curve_on_its_own_axis():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    train = [{"step": s, "loss": 1.0 + 1.0 / s} for s in range(1, 31)]
    evals = [{"step": s, "val_loss": 2.0, "val_ndcg@10": v} for s, v in ((10, 0.4), (20, 0.55), (30, 0.5))]
    plot_losses(ax, train, evals)
    right = [a for a in fig.axes if a is not ax]
    assert len(right) == 1 and right[0].get_ylabel() == "dev nDCG@10"
    (line,) = right[0].get_lines()
    assert list(line.get_xdata()) == [10, 20, 30] and list(line.get_ydata()) == [0.4, 0.55, 0.5]
    plt.close(fig)


def test_model_card_does_not_claim_two_stages_and_names_the_pooling():
    card = render_card({"base_model": "all-MiniLM-L6-v2", "pooling": "cls", "dim": 384, "max_seq_len": 256,
                        "normalize": True, "train_config": json.loads("{}")})
    assert "two-stage" not in card and "cls pooling" in card
