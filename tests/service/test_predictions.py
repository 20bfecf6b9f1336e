"""What happens to each prediction: confidences, the JSON-lines file and its rotation."""

import json
import math

import numpy as np
import pytest

from pi_backprop.service.capture import Sample
from pi_backprop.service.predictions import PredictionReporter
from pi_backprop.training.inference import confidences

CLASSES = ("rest", "tap", "shake", "tilt")


@pytest.mark.parametrize("loss, outputs, expected", [
    ("cross_entropy", [[0.0, 0.0]], [[0.5, 0.5]]),
    ("cross_entropy", [[1000.0, 0.0]], [[1.0, 0.0]]),            # no overflow
    ("cross_entropy", [[np.log(3.0), 0.0]], [[0.75, 0.25]]),
    ("mse", [[1.2, -0.1, 0.4]], [[1.0, 0.0, 0.4]]),              # clipped to [0, 1]
])
def test_confidences(loss, outputs, expected):
    np.testing.assert_allclose(confidences(np.array(outputs), loss), expected, atol=1e-12)


class Lights:
    def __init__(self):
        self.shown = []

    def show_prediction(self, index):
        self.shown.append(index)


def test_reports_go_to_the_class_led_and_the_live_accuracy(tmp_path):
    lights = Lights()
    reporter = PredictionReporter(CLASSES, lights=lights, window=3)
    assert math.isnan(reporter.recent_accuracy)
    for label, winner in [(1, 1), (2, 1), (None, 3), (3, 3), (0, 0)]:
        scores = np.full(4, 0.1)
        scores[winner] = 0.7
        assert reporter.report(Sample(np.zeros(2, np.float32), label, 0.0), scores, step=5) == (winner, 0.7)
    assert lights.shown == [1, 1, 3, 3, 0]
    assert reporter.recent_accuracy == pytest.approx(2 / 3)     # last 3 labelled: wrong, right, right
    assert reporter.last == "rest 0.70 (labelled rest)"


def test_jsonl_lines_and_rotation_keep_one_old_file(tmp_path):
    path = tmp_path / "sub" / "predictions.jsonl"
    reporter = PredictionReporter(CLASSES, jsonl=path, max_bytes=400)
    for n in range(30):
        scores = np.eye(4)[n % 4]
        reporter.report(Sample(np.zeros(2, np.float32), n % 4 if n % 2 else None, 1_700_000_000.25 + n), scores, n)
    old = path.with_name("predictions.jsonl.1")
    assert path.stat().st_size <= 400 and old.stat().st_size <= 400
    assert sorted(p.name for p in path.parent.iterdir()) == ["predictions.jsonl", "predictions.jsonl.1"]
    records = [json.loads(line) for f in (old, path) for line in f.read_text().splitlines()]
    steps = [r["step"] for r in records]
    assert steps == list(range(steps[0], 30))                     # consecutive, newest last, none torn
    last = records[-1]
    assert last == {"time": "2023-11-14T22:13:49.250Z", "class": "tap", "index": 1, "confidence": 1.0,
                    "label": 1, "step": 29}
    assert records[-2]["label"] is None


def test_an_unwritable_jsonl_path_does_not_stop_predictions(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    reporter = PredictionReporter(CLASSES, jsonl=blocker / "predictions.jsonl")
    for _ in range(3):
        assert reporter.report(Sample(np.zeros(2, np.float32), None, 0.0), np.eye(4)[2], 0) == (2, 1.0)
    assert reporter.count == 3
    warnings = [r for r in caplog.records if "cannot append" in r.getMessage()]
    assert len(warnings) == 1        # said once, not for every sample
