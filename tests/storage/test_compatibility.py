"""Files written by earlier versions keep loading: formats only grow.

data/v0.1.0/ was written by pi-backprop 0.1.0 (commit 9e86df2) with the numpy backend: a
sensor_mlp checkpoint after three Adam steps on ``inputs.npy`` (with the outputs it then
predicted, ``expected_predict.npy``) and a sample store of twelve samples, sample i being
inputs[i % 8] + i with label i % 4.
"""

import shutil
from pathlib import Path

import numpy as np
import pytest

import pi_backprop as pb
from pi_backprop.storage import checkpoint as ckpt
from pi_backprop.storage.store import SampleStore
from pi_backprop.training.inference import load_newest
from pi_backprop.training.trainer import Trainer

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(params=["v0.1.0"])
def written(request, tmp_path):
    """A copy of what that version wrote (opening may write: the store's journal, a lock)."""
    copy = tmp_path / request.param
    shutil.copytree(DATA / request.param, copy)
    return copy


def test_an_old_checkpoint_verifies_and_predicts_as_it_did(written, backend):
    info = ckpt.verify_checkpoint(written / "checkpoints" / "ckpt-00000003.npz")
    assert info.step == 3 and info.header["library_version"] == "0.1.0"
    loaded = load_newest(checkpoint=written / "checkpoints")
    x = np.load(written / "inputs.npy")
    expected = np.load(written / "expected_predict.npy")
    # to rounding: another machine's BLAS (an ARM board's) sums in another order
    np.testing.assert_allclose(loaded.model.predict(x), expected, rtol=1e-5, atol=1e-6)


def test_training_resumes_from_an_old_checkpoint(written):
    definition = pb.load_definition("sensor_mlp")
    with Trainer(definition, None, written / "checkpoints") as trainer:
        assert trainer.resumed_from is not None and trainer.step == 3
        assert trainer.settings["seed"] == 3
        assert trainer.optimizer.step_count == 3
        assert trainer.metrics == {"eval_accuracy": 0.5}


def test_an_old_sample_store_keeps_its_split_and_a_new_one_trains_on_its_first_block(written, tmp_path):
    from pi_backprop.storage.split import LEGACY_OFFSET, SPLIT_OFFSET, validation_mask

    with SampleStore(written / "samples.db", readonly=True) as old:
        assert old.split_offset == LEGACY_OFFSET
        held_out = sum(old.counts("val").values())
    assert held_out == int(validation_mask(np.arange(1, 13), 0.2, LEGACY_OFFSET).sum()) == 7   # ids 1-7
    with SampleStore(tmp_path / "new.db") as new:
        new.set_class_names(pb.load_definition("sensor_mlp").classes)
        new.add_samples(np.zeros((12, 32), np.float32), np.arange(12) % 4, "test")
        assert new.split_offset == SPLIT_OFFSET
        assert sum(new.counts("train").values()) >= 7 and sum(new.counts("val").values()) < 7

def test_an_old_sample_store_opens_with_its_samples(written):
    x = np.load(written / "inputs.npy")
    with SampleStore(written / "samples.db") as store:
        assert len(store) == 12
        assert store.class_names == tuple(pb.load_definition("sensor_mlp").classes)
        assert sum(store.counts("all").values()) == 12
        samples, labels, _ = store.load_split()
    expected = {(int(i % 4), round(float((x[i % 8] + i).sum()), 2)) for i in range(12)}
    got = {(int(label), round(float(s.sum()), 2)) for s, label in zip(samples, labels)}
    assert got == expected
