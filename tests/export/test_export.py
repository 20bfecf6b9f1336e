"""Exported models run elsewhere give our own predictions: each ONNX file is checked by
onnx's checker and run by onnxruntime against ``pi-backprop predict``'s numbers (1e-5), over
the shipped models and odd shapes; the npz is read back with numpy alone."""

import json
import subprocess
import sys

import numpy as np
import pytest

from pi_backprop.exc import ConfigError
from pi_backprop.export import export, format_of
from pi_backprop.modeldef import ModelDefinition, load_definition
from pi_backprop.training.datasets import Dataset
from pi_backprop.training.inference import load_newest
from pi_backprop.training.trainer import Trainer

onnx = pytest.importorskip("onnx", reason="ONNX export needs onnx (pip install 'pi-backprop[export]')")
ort = pytest.importorskip("onnxruntime", reason="the exported models are run with onnxruntime "
                          "(pip install 'pi-backprop[test]')")

ODD = {  # stride 2, padding, non-square kernels and pools, every layer kind, tanh and sigmoid
    "name": "odd_shapes", "input_shape": [2, 13, 17], "classes": ["a", "b", "c"], "loss": "softmax_cross_entropy",
    "layers": [{"type": "conv2d", "out_channels": 4, "kernel_size": [3, 5], "stride": 2, "padding": [1, 2]},
               {"type": "tanh"},
               {"type": "maxpool2d", "pool_size": [2, 3], "stride": [1, 2]},
               {"type": "conv2d", "out_channels": 5, "kernel_size": [2, 1], "padding": [0, 1]},
               {"type": "relu"}, {"type": "dropout", "p": 0.3},
               {"type": "avgpool2d", "pool_size": [2, 2], "stride": 1},
               {"type": "sigmoid"}, {"type": "flatten"}, {"type": "dense", "out_features": 3}]}
GLOBAL_POOL = {
    "name": "global_pool", "input_shape": [1, 9, 11], "classes": ["x", "y"], "loss": "softmax_cross_entropy",
    "layers": [{"type": "conv2d", "out_channels": 6, "kernel_size": 3, "padding": 1}, {"type": "relu"},
               {"type": "globalavgpool2d"}, {"type": "dense", "out_features": 2}]}
MSE = {"name": "mse_sigmoid", "input_shape": [7], "classes": ["p", "q", "r", "s"], "loss": "mse",
       "layers": [{"type": "dense", "out_features": 5}, {"type": "tanh"}, {"type": "dense", "out_features": 4},
                  {"type": "sigmoid"}]}


def trained_checkpoint(definition, folder, steps=12, dtype=np.float32):
    """A checkpoint of ``definition`` after a few steps on random data (weights off their start)."""
    rng = np.random.default_rng(3)
    x = rng.random((48, *definition.input_shape), dtype=np.float32)
    y = rng.integers(len(definition.classes), size=48)
    dataset = Dataset.from_arrays(x, y, definition, source="random", dtype=dtype)
    with Trainer(definition, dataset, folder, lr=0.01, seed=1, batch_size=8, dtype=dtype) as trainer:
        trainer.run(steps)
        trainer.save_checkpoint()
    return load_newest(checkpoint=folder)


def run_onnx(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    scores, confidences = session.run(["scores", "confidences"], {"input": x})
    return session, scores, confidences


DEFINITIONS = [pytest.param(lambda: load_definition(name), id=name) for name in ("camera_cnn", "sensor_mlp",
                                                                                  "seed_mlp")]
DEFINITIONS += [pytest.param(lambda d=d: ModelDefinition.from_dict(d), id=d["name"]) for d in (ODD, GLOBAL_POOL, MSE)]


@pytest.mark.parametrize("make", DEFINITIONS)
def test_onnxruntime_agrees_with_our_predictions(tmp_path, make):
    definition = make()
    loaded = trained_checkpoint(definition, tmp_path / "checkpoints")
    path = export(loaded, tmp_path / "model.onnx")
    x = np.random.default_rng(9).random((5, *definition.input_shape), dtype=np.float32)
    session, scores, confidences = run_onnx(path, x)
    np.testing.assert_allclose(scores, loaded.outputs(x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(confidences, loaded.confidences(x), rtol=1e-5, atol=1e-5)
    one = run_onnx(path, x[:1])[1]                              # any batch size
    np.testing.assert_allclose(one, scores[:1], rtol=1e-5, atol=1e-6)
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["classes"]) == list(definition.classes)
    assert ModelDefinition.from_dict(json.loads(meta["definition"])).to_dict() == definition.to_dict()
    assert meta["checkpoint_step"] == str(loaded.info.step) and model.opset_import[0].version == 13
    (first,) = session.get_inputs()
    assert first.name == "input" and first.type == "tensor(float)" and list(first.shape[1:]) == \
        list(definition.input_shape)


def test_a_float64_run_exports_float32_onnx_and_keeps_float64_in_the_npz(tmp_path):
    definition = ModelDefinition.from_dict(ODD)
    loaded = trained_checkpoint(definition, tmp_path / "checkpoints", dtype=np.float64)
    assert loaded.model.dtype == np.float64
    x = np.random.default_rng(4).random((3, *definition.input_shape), dtype=np.float32)
    _, scores, _ = run_onnx(export(loaded, tmp_path / "m.onnx"), x)
    np.testing.assert_allclose(scores, loaded.outputs(x), rtol=1e-5, atol=1e-5)
    empty = run_onnx(tmp_path / "m.onnx", x[:0])[1]
    assert empty.shape == (0, len(definition.classes))
    with np.load(export(loaded, tmp_path / "w.npz", "npz"), allow_pickle=False) as data:
        assert str(data["dtype"]) == "float64" and data["layer0.W"].dtype == np.float64
        np.testing.assert_array_equal(data["layer0.W"], loaded.model.layers[0].params["W"])


def test_the_npz_is_the_weights_and_the_definition_for_numpy_alone(tmp_path):
    definition = ModelDefinition.from_dict(ODD)
    loaded = trained_checkpoint(definition, tmp_path / "checkpoints")
    path = export(loaded, tmp_path / "weights.npz", "npz")
    with np.load(path, allow_pickle=False) as data:   # no pickle needed to read it
        assert ModelDefinition.from_dict(json.loads(str(data["definition"]))).to_dict() == definition.to_dict()
        assert list(data["classes"]) == list(definition.classes) and int(data["format_version"]) == 1
        for index, layer in enumerate(loaded.model.layers):
            for key, value in layer.params.items():
                np.testing.assert_array_equal(data[f"layer{index}.{key}"], value)
                assert data[f"layer{index}.{key}"].dtype == np.float32 and str(data["dtype"]) == "float32"
        keys = {k for k in data.files if k.startswith("layer")}
    assert keys == {f"layer{i}.{k}" for i, layer in enumerate(loaded.model.layers) for k in layer.params}


def test_a_layer_without_an_onnx_form_is_one_line_naming_it(tmp_path):
    from pi_backprop.nn.layers import Layer

    class Swish(Layer):
        pass
    loaded = trained_checkpoint(ModelDefinition.from_dict(MSE), tmp_path / "checkpoints")
    loaded.model.layers.insert(1, Swish())
    with pytest.raises(ConfigError) as caught:
        export(loaded, tmp_path / "model.onnx")
    assert "layer 1 (Swish) has no ONNX form" in str(caught.value) and not (tmp_path / "model.onnx").exists()


def test_format_follows_the_suffix_and_may_not_contradict_it():
    assert format_of("m.onnx", None) == "onnx" and format_of("w.NPZ", None) == "npz"
    assert format_of("model", None) == "onnx" and format_of("model", "npz") == "npz"
    with pytest.raises(ConfigError, match="--format must be one of onnx, npz"):
        format_of("m.onnx", "tflite")
    with pytest.raises(ConfigError, match="ends in .npz but --format is onnx"):
        format_of("w.npz", "onnx")


def test_the_export_never_goes_over_or_beside_the_checkpoints(tmp_path):
    loaded = trained_checkpoint(ModelDefinition.from_dict(MSE), tmp_path / "checkpoints")
    before = loaded.info.path.read_bytes()
    for out in (loaded.info.path, tmp_path / "checkpoints" / "model.onnx", tmp_path / "ckpt-99999999.npz"):
        run = subprocess.run([sys.executable, "-m", "pi_backprop", "export", "--checkpoint", str(loaded.info.path),
                              "--format", "npz" if out.suffix == ".npz" else "onnx", str(out)],
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 2 and run.stderr.count("\n") == 1 and "write the export somewhere else" in \
            run.stderr, run.stderr
    assert loaded.info.path.read_bytes() == before and not (tmp_path / "checkpoints" / "model.onnx").exists()


def test_the_command_writes_the_newest_checkpoint_and_says_what(tmp_path):
    loaded = trained_checkpoint(ModelDefinition.from_dict(GLOBAL_POOL), tmp_path / "checkpoints")
    out = subprocess.run([sys.executable, "-m", "pi_backprop", "export", "--checkpoint", str(tmp_path / "checkpoints"),
                          str(tmp_path / "m.onnx")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"wrote {tmp_path / 'm.onnx'}" in out.stdout and f"step {loaded.info.step}" in out.stdout
    x = np.random.default_rng(0).random((2, 1, 9, 11), dtype=np.float32)
    np.testing.assert_allclose(run_onnx(tmp_path / "m.onnx", x)[1], loaded.outputs(x), rtol=1e-5, atol=1e-5)
    nowhere = tmp_path / "no" / "such" / "dir" / "m.onnx"
    bad = subprocess.run([sys.executable, "-m", "pi_backprop", "export", "--checkpoint", str(tmp_path / "checkpoints"),
                          str(nowhere)], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "cannot write" in bad.stderr, bad.stderr
    empty = subprocess.run([sys.executable, "-m", "pi_backprop", "export", "--checkpoint", str(tmp_path / "nothing"),
                            str(tmp_path / "m2.onnx")], capture_output=True, text=True, timeout=120)
    assert empty.returncode == 2 and empty.stderr.count("\n") == 1, empty.stderr
