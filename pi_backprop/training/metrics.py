"""Classification metrics on plain arrays: the numbers `evaluate`, `report` and the
service show. Labels and predictions are int class indices."""

import numpy as np


def confusion_matrix(labels, predictions, num_classes) -> np.ndarray:
    """(num_classes, num_classes) int64 counts; row = true class, column = predicted class."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (np.asarray(labels), np.asarray(predictions)), 1)
    return matrix


def per_class_scores(matrix) -> dict:
    """Precision, recall and support per class from a confusion matrix.

    A class never predicted has precision NaN (undefined), one never present recall NaN.
    """
    matrix = np.asarray(matrix, np.float64)
    true_positive = np.diag(matrix)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = true_positive / matrix.sum(axis=0)
        recall = true_positive / matrix.sum(axis=1)
    return {"precision": precision, "recall": recall, "support": matrix.sum(axis=1).astype(np.int64)}


def accuracy(matrix) -> float:
    matrix = np.asarray(matrix)
    total = matrix.sum()
    return float(np.trace(matrix) / total) if total else float("nan")


def format_report(matrix, class_names) -> str:
    """Accuracy, a per-class table and the confusion matrix, for a plain terminal."""
    scores = per_class_scores(matrix)
    width = max(8, max(len(name) for name in class_names))
    lines = [f"accuracy {accuracy(matrix):.4f} on {int(np.sum(matrix))} samples", "",
             f"{'class':<{width}}  precision  recall  support"]
    for i, name in enumerate(class_names):
        p, r = scores["precision"][i], scores["recall"][i]
        lines.append(f"{name:<{width}}  {_fmt(p):>9}  {_fmt(r):>6}  {scores['support'][i]:>7}")
    cell = max(5, len(str(int(np.max(matrix)))) + 1) if np.size(matrix) else 5
    lines += ["", "confusion matrix (rows: true class, columns: predicted)",
              " " * (width + 3) + "".join(f"{i:>{cell}}" for i in range(len(class_names)))]
    for i, name in enumerate(class_names):
        lines.append(f"{i:>2} {name:<{width}}" + "".join(f"{int(v):>{cell}}" for v in matrix[i]))
    return "\n".join(lines)


def _fmt(value):
    return "-" if np.isnan(value) else f"{value:.3f}"
