"""What happens to each prediction: confidences, the JSON-lines file and its rotation, and the
unsure answer below ``min_confidence`` (log line, JSON line, class LEDs on gpiozero's mock pins)."""

import json
import math

import numpy as np
import pytest

from pi_backprop.hardware.leds import StatusLights
from pi_backprop.service.capture import Sample
from pi_backprop.service.events import EventBus
from pi_backprop.service.predictions import PredictionReporter, prediction
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
                    "unsure": False, "label": 1, "step": 29}
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


# -- the unsure answer ------------------------------------------------------------------------

def _scores(winner, confidence):
    """float (4,) confidences: ``winner`` has ``confidence``, the others half of it."""
    scores = np.full(4, confidence / 2)
    scores[winner] = confidence
    return scores


@pytest.mark.parametrize("min_confidence, winner, confidence, label, unsure, line", [
    (0.0, 0, 0.0, None, False, "rest 0.00"),                # the default: never unsure, not even at 0
    (0.5, 1, 0.41, None, True, "unsure (tap 0.41)"),
    (0.5, 1, 0.41, 2, True, "unsure (tap 0.41) (labelled shake)"),
    (0.5, 3, 0.5, None, False, "tilt 0.50"),                # "below" the threshold: equal is sure
    (0.5, 2, 0.93, 2, False, "shake 0.93 (labelled shake)"),
    (1.0, 2, 0.999, None, True, "unsure (shake 1.00)"),
])
def test_below_min_confidence_the_event_log_line_and_json_line_say_unsure(
        tmp_path, caplog, min_confidence, winner, confidence, label, unsure, line):
    caplog.set_level("DEBUG", logger="pi_backprop")
    jsonl = tmp_path / "predictions.jsonl"
    reporter = PredictionReporter(CLASSES, jsonl=jsonl)
    sample = Sample(np.zeros(2, np.float32), label, 1_700_000_000.5)
    scores = _scores(winner, confidence)
    data = prediction(sample, scores, 7, CLASSES, min_confidence)
    assert data == {"index": winner, "class": CLASSES[winner], "confidence": pytest.approx(confidence),
                    "unsure": unsure, "scores": [round(v, 4) for v in scores], "label": label, "step": 7,
                    "time": 1_700_000_000.5}          # the best guess is kept when unsure
    assert reporter.report(sample, scores, 7, min_confidence) == (winner, pytest.approx(confidence))
    assert reporter.last == line
    assert [r.getMessage() for r in caplog.records if r.name.endswith("predictions")] == [f"prediction: {line}"]
    record = json.loads(jsonl.read_text())
    assert record == {"time": "2023-11-14T22:13:20.500Z", "class": CLASSES[winner], "index": winner,
                      "confidence": round(confidence, 4), "unsure": unsure, "label": label, "step": 7}


def test_class_leds_stay_dark_while_unsure_and_light_again_when_sure(factory):
    pins = (23, 24, 25, 26)
    with StatusLights(class_leds=pins, pin_factory=factory) as lights:
        reporter = PredictionReporter(CLASSES, lights=lights)
        sample = Sample(np.zeros(2, np.float32), None, 0.0)

        def lit():
            return [pin for pin in pins if factory.pin(pin).state]

        reporter.report(sample, _scores(1, 0.7), 0, min_confidence=0.6)
        assert lit() == [24]
        reporter.report(sample, _scores(2, 0.55), 0, min_confidence=0.6)
        assert lit() == []                            # unsure: no class LED, not the last one either
        bus = EventBus()                              # the service's way: the reporter listens to events
        bus.subscribe(reporter.on_event, "prediction")
        bus.publish("prediction", **prediction(sample, _scores(3, 0.3), 0, CLASSES, 0.6))
        assert lit() == [] and reporter.last == "unsure (tilt 0.30)"
        reporter.report(sample, _scores(3, 0.9), 0, min_confidence=0.6)
        assert lit() == [26]
