"""The small-data study (scripts/small-data) end to end on a tiny setting: the draws, the
held-out set, determinism, the PyTorch twin's start, and the reports."""

import json

import numpy as np
import pytest

pytest.importorskip("sklearn", reason="the study needs scikit-learn (pip install 'pi-backprop[study]')")

import pi_backprop as pb  # noqa: E402
from pi_backprop.exc import ConfigError  # noqa: E402
from pi_backprop.hardware.preprocess import frame_to_input  # noqa: E402
from pi_backprop.study import digits as dg  # noqa: E402
from pi_backprop.study import recipes as rc  # noqa: E402
from pi_backprop.study import small_data  # noqa: E402

# The numpy backend: no JIT compile; the study runs the same trainer on both.
pytestmark = pytest.mark.usefixtures("numpy_backend")
TINY = {"ks": [2], "steps": 6, "baseline_names": ["1nn"]}   # numpy backend: ~0.1 s a step


@pytest.fixture(scope="module")
def data():
    return dg.load(rc.RECIPES["shipped"].definition().input_shape)


def without_times(results):
    return [{k: v for k, v in run.items() if k != "seconds"} for run in results["runs"]]


def test_digits_are_what_the_camera_path_gives(data):
    images, labels = dg.frames()
    assert data.x.shape == (1797, 1, 28, 28) and data.x.dtype == np.float32
    assert np.array_equal(data.x, frame_to_input(images, (1, 28, 28)))
    # full ink is white, the area resize keeps each image's mean brightness
    assert images.max() == 255 and data.x.max() == 1.0 and data.x.min() == 0.0
    np.testing.assert_allclose(data.x.mean(axis=(1, 2, 3)), images.mean(axis=(1, 2)) / 255, atol=1e-5)
    assert np.array_equal(data.y, labels)


def test_the_held_out_set_is_fixed_and_apart_from_the_pool(data):
    assert len(data.test_index) == dg.TEST_SIZE
    assert np.intersect1d(data.test_index, data.pool_index).size == 0
    assert np.array_equal(np.union1d(data.test_index, data.pool_index), np.arange(1797))
    again = dg.load((1, 28, 28))
    assert np.array_equal(again.test_index, data.test_index)
    other = dg.load((1, 28, 28), split_seed=dg.SPLIT_SEED + 1)
    assert not np.array_equal(other.test_index, data.test_index)


@pytest.mark.parametrize("k", [1, 2, 5, 50])
def test_a_draw_takes_k_per_class_from_the_pool(data, k):
    drawn = data.draw(k, seed=3)
    assert np.array_equal(np.bincount(data.y[drawn], minlength=10), np.full(10, k))
    assert len(np.unique(drawn)) == len(drawn)
    assert np.isin(drawn, data.pool_index).all() and not np.isin(drawn, data.test_index).any()
    assert np.array_equal(drawn, data.draw(k, seed=3))
    assert not np.array_equal(np.sort(drawn), np.sort(data.draw(k, seed=4)))
    assert np.isin(data.draw(1, seed=3), drawn).all()   # nested over k for one seed


def test_the_moved_and_relit_test_set_moves_and_relights_each_image(data, monkeypatch):
    x = data.x[data.test_index[:40]]
    moved = dg.moved_and_relit(x, seed=1)
    assert moved.shape == x.shape and moved.dtype == np.float32 and 0 <= moved.min() and moved.max() <= 1
    assert np.array_equal(moved, dg.moved_and_relit(x, seed=1))
    assert not np.array_equal(moved, dg.moved_and_relit(x, seed=2))
    assert (np.abs(moved - x).reshape(40, -1).max(axis=1) > 0.1).all()     # every image changed
    still = {"rotate": 0.0, "scale": 0.0, "shift": 0, "gain": [1.0, 1.0], "offset": 0.0, "ramp": 0.0}
    monkeypatch.setattr(dg, "MOVED", still)
    np.testing.assert_array_equal(dg.moved_and_relit(x, seed=1), x)
    monkeypatch.setattr(dg, "MOVED", still | {"shift": 2})      # whole pixels: a shifted copy, dark beyond
    shifted = dg.moved_and_relit(x, seed=1)
    for image, out in zip(x[:, 0], shifted[:, 0]):
        found = [(r, c) for r in range(-2, 3) for c in range(-2, 3)
                 if np.array_equal(out, np.roll(np.pad(image, 2), (r, c), axis=(0, 1))[2:-2, 2:-2])]
        assert found, "not a shift of the image"
    monkeypatch.setattr(dg, "MOVED", still | {"gain": [0.5, 0.5], "offset": 0.0})
    np.testing.assert_allclose(dg.moved_and_relit(x, seed=1), 0.5 * x, atol=1e-7)


def test_a_k_larger_than_the_pool_holds_is_refused(data):
    with pytest.raises(ConfigError, match=f"k must be between 1 and {data.fewest_per_class()}"):
        data.draw(data.fewest_per_class() + 1, seed=0)


def test_a_tiny_study_end_to_end(tmp_path):
    lines = []
    results = small_data.run(["shipped"], seeds=[0, 1], log=lines.append, **TINY)
    assert [(r["method"], r["seed"]) for r in results["runs"]] == [
        ("shipped", 0), ("1nn", 0), ("shipped", 1), ("1nn", 1)]
    assert len(lines) == 4 and lines[-1].startswith("[4/4] k=2 seed=1 1nn: ")
    test = np.array(results["test_index"])
    assert len(test) == dg.TEST_SIZE and results["config"]["test_size"] == dg.TEST_SIZE
    labels = dg.frames()[1]
    for draw in results["draws"]:
        index = np.array(draw["index"])
        assert np.intersect1d(index, test).size == 0
        assert np.array_equal(np.bincount(labels[index], minlength=10), np.full(10, 2))
    assert results["draws"][0]["index"] != results["draws"][1]["index"]
    by_method = {}
    for run in results["runs"]:
        by_method.setdefault(run["method"], []).append(run["accuracy"])
    # both learn from 20 images in 6 steps: well above the 10% of guessing (seen: 44-57%, 74-79%)
    assert min(by_method["1nn"]) > 0.5 and min(by_method["shipped"]) > 0.2
    summary = {(r["method"], r["k"]): r for r in results["summary"]}
    moved = {(r["method"], r["k"]): r for r in results["summary_moved"]}
    assert moved[("1nn", 2)]["mean"] == pytest.approx(np.mean([r["moved_accuracy"] for r in results["runs"]
                                                               if r["method"] == "1nn"]))
    # raw-pixel nearest neighbours lose most when the images move (seen: 56% -> 30%)
    assert moved[("1nn", 2)]["mean"] < summary[("1nn", 2)]["mean"]
    assert summary[("shipped", 2)]["n"] == 2
    assert summary[("shipped", 2)]["mean"] == pytest.approx(np.mean(by_method["shipped"]))
    assert summary[("1nn", 2)]["std"] == pytest.approx(np.std(by_method["1nn"], ddof=1))
    assert results["config"]["recipes"]["shipped"]["augment"] == {}

    json_path, md_path = small_data.write(results, tmp_path)
    assert json.loads(json_path.read_text()) == results
    text, table = md_path.read_text(), small_data.table(results)
    for label in results["methods"].values():
        row = next(line for line in text.splitlines() if line.startswith(f"| {label} |"))
        assert " ± " in row
        assert label in table
    assert "| method | k=2 |" in text and "k=2" in table
    assert text.count("| method | k=2 |") == 2 and "Test set moved and re-lit:" in text
    assert "method: moved and re-lit" in table and "moved by up to ±3 px" in table


def test_the_same_seed_gives_the_same_results():
    both = small_data.run(["shipped"], seeds=[0, 1], log=lambda line: None, **TINY)
    alone = small_data.run(["shipped"], seeds=[1], log=lambda line: None, **TINY)
    assert without_times(alone) == [r for r in without_times(both) if r["seed"] == 1]
    assert alone["draws"] == both["draws"][1:]


def test_the_torch_twin_starts_where_ours_does_and_trains_the_same_batches(data):
    torch = pytest.importorskip("torch", reason="the PyTorch twin needs torch (pip install 'pi-backprop[bench]')")
    from pi_backprop.study import torch_twin

    recipe = rc.RECIPES["shipped"]
    drawn = data.draw(2, seed=0)
    with rc.trainer_for(recipe, recipe.definition(), data.x, data.y, drawn, data.test_index, 0, 3) as trainer:
        twin = torch_twin.twin_of(trainer)
        x = trainer.dataset.x[:50]
        with torch.no_grad():
            np.testing.assert_allclose(twin.net(torch.from_numpy(x)).numpy(), trainer.model.predict(x),
                                       rtol=1e-4, atol=1e-5)
        trainer.run(3)
        torch_twin.train(twin, trainer, 3)
        theirs = np.concatenate([p.detach().numpy().T.ravel() if p.ndim == 2 else p.detach().numpy().ravel()
                                 for p in twin.net.parameters()])
        ours = np.concatenate([v.ravel() for layer in trainer.model.layers for v in layer.params.values()])
        # Adam's first steps move most weights by about lr (0.002) each: a batch or an
        # optimizer setting that differed would show as that much, rounding as ~1e-7
        assert np.max(np.abs(ours - theirs)) < 1e-5
    results = small_data.run(["shipped"], torch_names=["shipped"], seeds=[0], log=lambda line: None, **TINY)
    assert list(results["methods"]) == ["shipped", "shipped@torch", "1nn"]
    assert "shipped (PyTorch)" in small_data.markdown(results)


def test_a_recipes_augmentation_reaches_the_trainer():
    x = np.zeros((20, 1, 28, 28), np.float32)
    y = np.arange(20) % 10
    train, test = np.arange(10), np.arange(10, 20)

    def trained_with(recipe):
        definition = recipe.definition()
        with rc.trainer_for(recipe, definition, x, y, train, test, seed=0, steps=1) as trainer:
            return trainer.augment.to_table()

    recipe = rc.Recipe("augment-shift", "camera_cnn", "adam", 2e-3, 32, 600, augment={"shift": 3})
    assert recipe.to_dict()["augment"] == {"shift": 3}
    assert trained_with(recipe) == {"shift": 3}
    assert trained_with(rc.RECIPES["shipped"]) == {}                       # "before": none, whatever the TOML says
    assert trained_with(rc.RECIPES["defaults"]) == pb.load_definition("camera_cnn").augment != {}
    assert rc.RECIPES["shipped"].trainer_options() == {"optimizer": "adam", "lr": 2e-3, "batch_size": 32,
                                                       "augment": {}}


def test_the_command_line_writes_the_reports_and_says_what_is_wrong(tmp_path, capsys):
    common = ["--backend", "numpy", "--seeds", "1", "--steps", "5", "--torch", "none", "--baselines", "1nn",
              "--output-dir", str(tmp_path)]
    assert small_data.main(["--k", "2", *common]) == 0
    out = capsys.readouterr().out
    assert "shipped (pi-backprop numpy)" in out and "1-nearest-neighbour" in out
    assert (tmp_path / "small-data.json").is_file() and (tmp_path / "small-data.md").is_file()
    for argv, message in [(["--recipes", "nope"], "unknown recipe 'nope'; known recipes: shipped"),
                          (["--k", "500"], "k must be between 1 and"),
                          (["--baselines", "knn"], "unknown baseline 'knn'")]:
        assert small_data.main([*common, "--k", "2", *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("small-data: error: ") and message in err[0], err


def test_the_service_parts_before_is_the_shipped_camera_model_without_its_augmentation(tmp_path):
    from pi_backprop.storage.checkpoint import architecture
    from pi_backprop.study import camera_service
    plain = pb.load_definition(str(camera_service._without_augment(tmp_path)))
    shipped = pb.load_definition("camera_cnn")
    assert shipped.augment and plain.augment == {}
    assert architecture(plain.to_dict()) == architecture(shipped.to_dict()) | {"name": "camera_cnn"}
    assert plain.training == shipped.training


def test_the_sensor_part_measures_every_table(numpy_backend, monkeypatch):
    from pi_backprop.study import sensor_windows
    monkeypatch.setattr(sensor_windows, "STEPS", 20)
    results = sensor_windows.run(ks=(2,), seeds=range(2), log=lambda _: None)
    assert set(results) == {(name, 2) for name in sensor_windows.TABLES}
    assert all(len(values) == 2 and all(0 <= v <= 1 for v in values) for values in results.values())
    text = sensor_windows.markdown(results, ks=(2,))
    assert "time_shift 12" in text and f"defaults `{pb.load_definition('sensor_mlp').augment}`" in text
