"""Small, real state directories for the evaluate/predict/report tests: a sample store
filled with simulated data, metrics recorded while a Trainer trains on it, checkpoints."""


from pi_backprop.hardware import simulated
from pi_backprop.modeldef import ModelDefinition
from pi_backprop.storage.store import SampleStore
from pi_backprop.training.datasets import open_dataset
from pi_backprop.training.trainer import Trainer

# A dense network on 12x12 frames trains in well under a second on either backend.
CAMERA = {"name": "tiny_camera", "input_shape": [1, 12, 12], "classes": ["empty", "circle", "hbar", "vbar"],
          "loss": "softmax_cross_entropy",
          "layers": [{"type": "flatten"}, {"type": "dense", "out_features": 32}, {"type": "relu"},
                     {"type": "dense", "out_features": 4}]}
# An MSE model with sigmoid outputs on sensor windows: the line-plot grid and sigmoid confidences.
SENSOR = {"name": "tiny_sensor", "input_shape": [16], "classes": list(simulated.SENSOR_CLASSES), "loss": "mse",
          "layers": [{"type": "dense", "out_features": 16}, {"type": "relu"},
                     {"type": "dense", "out_features": 4}, {"type": "sigmoid"}]}


def build_state(state_dir, kind="camera", samples=240, steps=300, train=True, augment=None):
    """Fill ``state_dir`` like the service does; returns the ModelDefinition. ``augment``:
    the trainer's [augment] table (None: the definition's, which is none)."""
    definition = ModelDefinition.from_dict(CAMERA if kind == "camera" else SENSOR)
    if kind == "camera":
        x, y = simulated.camera_dataset(samples, 0, tuple(definition.input_shape), definition.classes)
    else:
        x, y = simulated.sensor_dataset(samples, 0, definition.input_shape[0], definition.classes)
    db = state_dir / "samples.db"
    with SampleStore(db) as store:
        store.set_class_names(definition.classes)
        store.add_samples(x, y, source="test")
        if train:
            def record(report):
                if report.metrics:
                    store.record_metrics(report.step, report.metrics["train_loss"],
                                         val_loss=report.metrics["eval_loss"],
                                         val_accuracy=report.metrics["eval_accuracy"])
            dataset = open_dataset(db, definition)
            with Trainer(definition, dataset, state_dir / "checkpoints", lr=0.01, seed=0, augment=augment,
                         checkpoint_every=100, eval_every=50, hooks=[record]) as trainer:
                trainer.run(steps)
    return definition


def newest_model(state_dir):
    """(model, step) of the newest checkpoint, loaded without pi_backprop.training.inference: the
    independent reference the tests compare the commands with."""
    from pi_backprop.nn.optim import Adam
    from pi_backprop.storage import checkpoint as ckpt

    info = ckpt.find_latest(state_dir / "checkpoints").latest
    definition = ModelDefinition.from_dict(info.header["model"])
    model = definition.build()
    ckpt.load_into(info, model, Adam(model))
    return model, info.step
