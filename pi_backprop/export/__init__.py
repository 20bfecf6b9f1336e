"""A trained model, out of our own checkpoint format: ONNX (to run elsewhere: onnxruntime,
OpenCV, a phone) or npz (the weights and the definition, readable with numpy alone).

    from pi_backprop.export import export
    export(loaded, "model.onnx")           # loaded: training.inference.LoadedModel
    export(loaded, "model.npz", "npz")

``onnx_model`` builds the ONNX graph (the ``export`` extra: ``pip install 'pi-backprop[export]'``),
``npz`` writes the plain arrays.
"""

from pathlib import Path

from ..exc import ConfigError
from ..storage.atomic import atomic_write

FORMATS = ("onnx", "npz")
OPSET_TEXT = "ONNX opset 13"       # onnx_model.OPSET, without importing onnx for --help


def format_of(path: Path, asked: str | None) -> str:
    """The format asked for, or the one the file name ends in (onnx when it says neither)."""
    suffix = Path(path).suffix.lower().lstrip(".")
    if asked is not None:
        if asked not in FORMATS:
            raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {asked!r}")
        if suffix in FORMATS and suffix != asked:
            raise ConfigError(f"{path} ends in .{suffix} but --format is {asked}: a reader that goes by the "
                              f"name would fail on it; name it .{asked}, or leave --format out")
        return asked
    return suffix if suffix in FORMATS else "onnx"


def check_destination(out: Path, checkpoint: Path) -> None:
    """Refuse to write over the checkpoint exported, or into its folder (the service would
    take a file there for a checkpoint): a one-line ConfigError."""
    out, checkpoint = Path(out).resolve(), Path(checkpoint).resolve()
    if out == checkpoint or out.parent == checkpoint.parent or out.name.startswith("ckpt-"):
        raise ConfigError(f"{out} is {'the checkpoint itself' if out == checkpoint else 'in the checkpoint folder'}"
                          f"{' or named like a checkpoint' if out.name.startswith('ckpt-') else ''}: "
                          "write the export somewhere else")


def export(loaded, out: Path, fmt: str = "onnx") -> Path:
    """Write ``loaded`` (a ``LoadedModel``) to ``out`` as ``fmt``; returns the path written.
    The file is written whole or not at all (a temporary file renamed over ``out``)."""
    out = Path(out)
    if fmt == "onnx":
        from .onnx_model import onnx_bytes
        data = onnx_bytes(loaded)
    else:
        from .npz import npz_bytes
        data = npz_bytes(loaded)
    try:
        with atomic_write(out) as file:
            file.write(data)
    except OSError as error:
        raise ConfigError(f"cannot write {out}: {error.strerror or error}") from None
    return out
