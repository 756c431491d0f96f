"""The benchmark's headline figure stays legible however many tasks and how long the encoder names."""

import itertools

import matplotlib

matplotlib.use("Agg")

import pandas as pd

from eolab.reports import benchmark as report


def _table(n_encoders: int, n_tasks: int = 7) -> pd.DataFrame:
    rows = []
    for t in range(n_tasks):
        for e in range(n_encoders):
            for s, split in enumerate(("random", "blocked")):
                v = 0.5 + 0.01 * e - 0.05 * s
                rows.append({"task": f"task_{t}", "encoder": f"objective=mae+simclr-seed={e}-{e:012x}", "protocol": "linear",
                             "split": split, "pool": "mean_std", "block": "4", "variant": "", "adapter": "",
                             "metric": "accuracy", "ci_method": "bootstrap", "not_applicable": "",
                             "value": v, "ci_low": v - 0.02, "ci_high": v + 0.02})
    return pd.DataFrame(rows)


def _boxes_overlap(boxes) -> bool:
    boxes = sorted(boxes, key=lambda b: b.y0)
    return any(a.y1 > b.y0 + 0.5 for a, b in itertools.pairwise(boxes))


def test_headline_figure_has_horizontal_readable_labels() -> None:
    fig = report.plot_splits(_table(5))
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 7
    labels = [t for t in axes[0].get_yticklabels() if t.get_text()]
    assert len(labels) == 5 and all(t.get_rotation() == 0 for t in labels)
    assert all("000000000" not in t.get_text() for t in labels)  # run hashes dropped
    assert not _boxes_overlap([t.get_window_extent(renderer) for t in labels])
    for ax in axes:  # panels keep a usable plotting width
        assert ax.get_window_extent(renderer).width > 150


def test_figure_grows_with_the_number_of_encoders() -> None:
    small, large = report.plot_splits(_table(2)), report.plot_splits(_table(10))
    assert large.get_figheight() > 2 * small.get_figheight() * 0.9
    assert large.get_figwidth() == small.get_figwidth()
