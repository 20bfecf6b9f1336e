"""What the service does with each prediction: an event, a log line, a JSON line, a class LED.

``prediction()`` turns a sample's confidences into the data of a ``prediction`` event; the
``PredictionReporter`` listens to those events (or is handed one prediction by ``report``).
A prediction less confident than ``[predict] min_confidence`` is *unsure*: its event says so,
the log line and the status say "unsure (cup 0.41)", and no class LED is lit.
"""

import json
import logging
import math
import os
import time
from pathlib import Path

import numpy as np

_log = logging.getLogger(__name__)


def prediction(sample, scores, step, class_names, min_confidence=0.0) -> dict:
    """The ``prediction`` event's data for ``sample`` (a ``capture.Sample``) and ``scores``
    (float (C,) confidences), made by the model at training step ``step``.

    ``unsure`` is True when the best confidence is below ``min_confidence`` (0..1; 0 = never);
    ``class`` and ``confidence`` are then the best guess all the same.
    """
    index = int(np.argmax(scores))
    confidence = float(scores[index])
    return {"index": index, "class": class_names[index], "confidence": confidence,
            "unsure": confidence < min_confidence, "scores": [round(float(v), 4) for v in scores],
            "label": sample.label, "step": int(step), "time": float(sample.time)}


def class_to_light(data) -> int | None:
    """The class LED a prediction (a ``prediction()`` dict) lights: its class index, or None
    (every class LED dark) when it is unsure."""
    return None if data["unsure"] else data["index"]


class PredictionReporter:
    """Logs each prediction (info if ``log_all``, else debug), appends it to ``jsonl``
    (rotated at ``max_bytes``, one old file kept) and lights the class LED (none if unsure).

    class_names : tuple of str; lights: ``StatusLights`` or None.
    ``recent_accuracy`` is the share of correct predictions on the last ``window`` labelled
    samples, each predicted before it was trained on: a live estimate.
    """

    def __init__(self, class_names, *, jsonl="", max_bytes=10_000_000, log_all=False, lights=None, window=50):
        self.class_names = tuple(class_names)
        self.lights, self.window = lights, window
        self.configure(jsonl=jsonl, max_bytes=max_bytes, log_all=log_all)
        self.count = 0
        self.last = None
        self._hits = []

    def configure(self, *, jsonl, max_bytes, log_all):
        self.jsonl = Path(jsonl) if jsonl else None
        self.max_bytes, self.log_all = int(max_bytes), bool(log_all)

    @property
    def recent_accuracy(self):
        return sum(self._hits) / len(self._hits) if self._hits else math.nan

    def report(self, sample, scores, step, min_confidence=0.0):
        """scores: float (C,) confidences for one sample; step: the model's training step;
        below ``min_confidence`` the prediction is unsure. Returns (class index, confidence)."""
        data = prediction(sample, scores, step, self.class_names, min_confidence)
        self.record(data)
        return data["index"], data["confidence"]

    def on_event(self, event) -> None:
        """An ``EventBus`` subscriber for ``prediction`` events."""
        self.record(event.data)

    def record(self, data) -> None:
        """Log, count, light and append one prediction (a ``prediction()`` dict)."""
        index, confidence, label, unsure = data["index"], data["confidence"], data["label"], data["unsure"]
        self.count += 1
        if label is not None:
            self._hits = (self._hits + [index == label])[-self.window:]
        guess = f"{self.class_names[index]} {confidence:.2f}"
        labelled = "" if label is None else f" (labelled {self.class_names[label]})"
        self.last = (f"unsure ({guess})" if unsure else guess) + labelled
        _log.log(logging.INFO if self.log_all else logging.DEBUG, "prediction: %s", self.last)
        if self.lights is not None:
            self.lights.show_prediction(class_to_light(data))
        if self.jsonl is not None:
            when = data["time"]
            self._append({"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(when))
                          + f".{int(when % 1 * 1000):03d}Z",
                          "class": self.class_names[index], "index": index,
                          "confidence": round(confidence, 4), "unsure": unsure, "label": label,
                          "step": data["step"]})

    def _append(self, record):
        line = json.dumps(record, separators=(",", ":")) + "\n"
        try:
            self.jsonl.parent.mkdir(parents=True, exist_ok=True)
            if self.jsonl.exists() and self.jsonl.stat().st_size + len(line) > self.max_bytes:
                os.replace(self.jsonl, self.jsonl.with_name(self.jsonl.name + ".1"))
            with self.jsonl.open("a", encoding="utf-8") as file:
                file.write(line)
        except OSError as error:
            # A full or read-only disk must not stop predictions; say so once in a while.
            if self.count % 100 == 1:
                _log.warning("cannot append to %s: %s", self.jsonl, error.strerror or error)
