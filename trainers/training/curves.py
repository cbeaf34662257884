"""Training curves as a picture: `curves.png` from a run's `history.csv`.

    write_curves("runs/demo/history.csv", "runs/demo/curves.png", steps_per_epoch=40)

One panel per quantity, against the training step (or the epoch when the steps per epoch are
not given): loss; accuracy and top-5 (classifiers); CER if the history has it; the learning
rate; then any other logged quantity. Training values are solid lines, validation values
(`val_*` columns) dashed in the same colour. Both paths may be local or on any tf.io.gfile
scheme (s3://, gs://), like the rest of a workdir.
"""
from __future__ import annotations

import csv
import io
import math

from beam_preprocess.contract.fileio import open_binary

# Panels in the order they are drawn; quantities not named here get a panel each, after these.
PANEL_ORDER = ("loss", "accuracy", "cer", "learning_rate")
PANEL_TITLES = {"loss": "loss", "accuracy": "accuracy", "cer": "character error rate",
                "learning_rate": "learning rate"}


def panel_of(column: str) -> str:
    """The panel a history column is drawn in: `val_top5` -> "accuracy", `val_loss` -> "loss"."""
    base = column[4:] if column.startswith("val_") else column
    if base == "loss" or base.endswith("_loss"):
        return "loss"
    if "acc" in base or base.startswith("top"):
        return "accuracy"
    if "cer" in base:
        return "cer"
    if base in ("learning_rate", "lr"):
        return "learning_rate"
    return base


def read_history(history_csv_path: str) -> tuple[list[int], dict[str, list[float]]]:
    """The epochs and every numeric column of a `history.csv` (HistoryCSV's format).

    Returns:
      (epochs, columns): 0-based epoch numbers in file order, and for each column one value
      per epoch (NaN where the epoch has no value, e.g. no validation that epoch).

    Raises:
      FileNotFoundError: the file does not exist.
      ValueError: no `epoch` column, no rows, or a value that is not a number.
    """
    try:
        with open_binary(history_csv_path, "rb") as f:
            text = f.read().decode("utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{history_csv_path}: no training history to plot") from None
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows:
        raise ValueError(f"{history_csv_path}: no epochs in the training history")
    if "epoch" not in rows[0]:
        raise ValueError(f"{history_csv_path}: no 'epoch' column (columns: {list(rows[0])})")
    epochs, columns = [], {key: [] for key in rows[0] if key != "epoch"}
    for line, row in enumerate(rows, start=2):
        epochs.append(int(float(row["epoch"])))
        for key in columns:
            value = row.get(key, "")
            try:
                columns[key].append(float(value) if value not in ("", None) else math.nan)
            except ValueError:
                raise ValueError(f"{history_csv_path}, line {line}: column {key!r} is not a "
                                 f"number. Received: {value!r}") from None
    return epochs, columns


def write_curves(history_csv_path: str, out_png: str, *, steps_per_epoch: int | None = None
                 ) -> dict:
    """Draws the training curves of a run into a PNG.

    Args:
      history_csv_path: the run's `history.csv` (one row per epoch).
      out_png: the PNG to write.
      steps_per_epoch: training steps per epoch; the x axis is then the step at the end of each
        epoch, else the epoch number.

    Returns:
      dict with "panels" (panel names, in drawing order), "columns" (the columns drawn per
      panel), "epochs" and "x_axis" ("step" or "epoch").

    Raises:
      FileNotFoundError, ValueError: see `read_history`.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs, columns = read_history(history_csv_path)
    if steps_per_epoch:
        x, x_axis = [(e + 1) * steps_per_epoch for e in epochs], "step"
    else:
        x, x_axis = [e + 1 for e in epochs], "epoch"
    panels: dict[str, list[str]] = {}
    for key in sorted(columns, key=lambda k: (k.startswith("val_"), k)):
        if any(math.isfinite(v) for v in columns[key]):
            panels.setdefault(panel_of(key), []).append(key)
    order = [p for p in PANEL_ORDER if p in panels] + sorted(set(panels) - set(PANEL_ORDER))
    if not order:
        raise ValueError(f"{history_csv_path}: no numeric column to plot (columns: "
                         f"{sorted(columns)})")

    cols = len(order) if len(order) <= 3 else 2
    rows = math.ceil(len(order) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.0 * cols, 3.6 * rows), squeeze=False)
    marker = "o" if len(x) <= 30 else None
    for ax, panel in zip(axes.flat, order):
        colours: dict[str, str] = {}
        for key in panels[panel]:
            base = key[4:] if key.startswith("val_") else key
            validation = key.startswith("val_")
            colour = colours.setdefault(base, f"C{len(colours)}")
            label = (PANEL_TITLES["learning_rate"] if panel == "learning_rate" else
                     f"{base} ({'validation' if validation else 'train'})")
            ax.plot(x, columns[key], linestyle="--" if validation else "-", marker=marker,
                    markersize=3, color=colour, label=label)
        values = [v for key in panels[panel] for v in columns[key] if math.isfinite(v)]
        if panel == "learning_rate" and min(values) > 0 and max(values) / min(values) > 20:
            ax.set_yscale("log")
        ax.set_title(PANEL_TITLES.get(panel, panel))
        ax.set_xlabel(x_axis)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(order):]:
        ax.set_visible(False)
    fig.suptitle(f"training curves: {len(epochs)} epoch(s)"
                 + (f", {steps_per_epoch} steps each" if steps_per_epoch else ""))
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    with open_binary(out_png, "wb") as f:
        f.write(buffer.getvalue())
    return {"panels": order, "columns": panels, "epochs": len(epochs), "x_axis": x_axis}
