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


def test_model_card_does_not_claim_two_stages_and_names_the_pooling():
    card = render_card({"base_model": "all-MiniLM-L6-v2", "pooling": "cls", "dim": 384, "max_seq_len": 256,
                        "normalize": True, "train_config": json.loads("{}")})
    assert "two-stage" not in card and "cls pooling" in card
