"""PNG pictures of what was learned: learning curves, a confusion matrix, a grid of
samples per class as the model sees them, and samples with their augmented versions as the
model is trained on them. Uses matplotlib (the ``plot`` extra), imported only here and only
when a picture is drawn."""

import textwrap

import numpy as np

from ..exc import ConfigError

INSTALL_HINT = ("matplotlib is needed for pictures: pip install 'pi-backprop[plot]' "
                "(on Raspberry Pi OS: sudo apt install python3-matplotlib)")


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    matplotlib.use("Agg")  # files only: no display on a Pi over SSH or under systemd
    import matplotlib.pyplot as plt
    return plt


def learning_curves(history, path, title="learning curves"):
    """Loss and accuracy against step.

    history : dict of equal-length sequences; "step" plus any of "loss", "accuracy",
              "val_loss", "val_accuracy" (NaN where a value was not measured).
    """
    plt = _pyplot()
    steps = np.asarray(history["step"])
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for key, label, ax in (("loss", "train", ax_loss), ("val_loss", "validation", ax_loss),
                           ("accuracy", "train", ax_acc), ("val_accuracy", "validation", ax_acc)):
        values = np.asarray(history.get(key, []), dtype=float)
        if values.size and np.isfinite(values).any():
            keep = np.isfinite(values)
            ax.plot(steps[keep], values[keep], label=label, marker="." if keep.sum() < 30 else None)
    ax_loss.set(xlabel="step", ylabel="loss", title="loss")
    ax_acc.set(xlabel="step", ylabel="accuracy", title="accuracy", ylim=(0, 1.02))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.suptitle(title)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def confusion_picture(matrix, class_names, path, title="confusion matrix (validation)"):
    """Heat map of a (C, C) confusion matrix with the counts written in each cell."""
    plt = _pyplot()
    matrix = np.asarray(matrix)
    size = max(4.0, 0.6 * len(class_names) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size), constrained_layout=True)
    image = ax.imshow(matrix, cmap="Blues")
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45, ha="right")
    ax.set_yticks(ticks, class_names)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    threshold = matrix.max() / 2 if matrix.size else 0
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center",
                color="white" if count > threshold else "black", fontsize=8)
    fig.colorbar(image, ax=ax, shrink=0.8)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def sample_grid(samples_by_class, class_names, path, title="recent samples per class, as the model sees them"):
    """One row per class of up to a few model inputs.

    samples_by_class : list (one entry per class) of float arrays (k, C, H, W) in [0, 1]
                       or (k, features) for sensor windows (drawn as line plots).
    """
    plt = _pyplot()
    columns = max([len(s) for s in samples_by_class] + [1])
    vectors = [np.asarray(s) for s in samples_by_class if len(s) and np.asarray(s).ndim == 2]
    limits = (min(v.min() for v in vectors), max(v.max() for v in vectors)) if vectors else (0, 1)
    rows = len(class_names)
    fig, axes = plt.subplots(rows, columns, figsize=(1.3 * columns + 1, 1.3 * rows + 0.6),
                             squeeze=False, constrained_layout=True)
    for row, (name, samples) in enumerate(zip(class_names, samples_by_class)):
        for column in range(columns):
            ax = axes[row][column]
            ax.set_xticks([])
            ax.set_yticks([])
            if column == 0:
                ax.set_ylabel(name, rotation=0, ha="right", va="center")
            if column >= len(samples):
                ax.axis("off") if column else None
                continue
            sample = np.asarray(samples[column])
            if sample.ndim == 3:
                _show_image(ax, sample)
            else:
                ax.plot(sample.reshape(-1), linewidth=0.8)
                ax.set_ylim(*limits)  # one scale for all, so a quiet window looks quiet
    fig.suptitle(title)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _show_image(ax, sample):
    """One (C, H, W) input in [0, 1]: grey for one channel, colour for three."""
    picture = sample[0] if sample.shape[0] == 1 else np.transpose(sample, (1, 2, 0))
    ax.imshow(np.clip(picture, 0, 1), cmap="gray" if sample.shape[0] == 1 else None, vmin=0, vmax=1)


def augmented_samples(samples, versions, row_names, path, title="augmented training samples"):
    """Samples with augmented versions of each, as the model is trained on them.

    samples  : float (k, C, H, W) in [0, 1], or (k, L) sensor windows, as stored
    versions : float (k, V, *the same shape): V augmented versions of each sample
    Images: a row per sample, the stored one first, then its versions. Windows: a panel per
    sample, the stored window drawn thick over its versions.
    """
    plt = _pyplot()
    samples, versions = np.asarray(samples), np.asarray(versions)
    rows, count = len(samples), versions.shape[1]
    if samples.ndim == 4:
        columns = count + 1
        fig, axes = plt.subplots(rows, columns, figsize=(1.3 * columns + 1, 1.3 * rows + 0.6),
                                 squeeze=False, constrained_layout=True)
        for row in range(rows):
            for column in range(columns):
                ax = axes[row][column]
                ax.set_xticks([])
                ax.set_yticks([])
                _show_image(ax, samples[row] if column == 0 else versions[row, column - 1])
                if row == 0:
                    ax.set_title("as stored" if column == 0 else f"augmented {column}", fontsize=8)
            axes[row][0].set_ylabel(row_names[row], rotation=0, ha="right", va="center")
    else:
        fig, axes = plt.subplots(rows, 1, figsize=(7, 1.6 * rows + 0.6), squeeze=False, sharex=True,
                                 constrained_layout=True)
        for row in range(rows):
            ax = axes[row][0]
            for version in versions[row]:
                ax.plot(version.reshape(-1), linewidth=0.7, alpha=0.7)
            ax.plot(samples[row].reshape(-1), color="black", linewidth=1.6, label="as stored")
            ax.set_ylabel(row_names[row], rotation=0, ha="right", va="center")
            ax.grid(alpha=0.3)
        axes[0][0].legend(loc="upper right", fontsize=8)
        axes[-1][0].set_xlabel(f"reading (thin: {count} augmented versions)")
    fig.suptitle("\n".join(textwrap.wrap(title, 12 * (count + 1))), fontsize=10)   # a long table wraps
    fig.savefig(path, dpi=100)
    plt.close(fig)
