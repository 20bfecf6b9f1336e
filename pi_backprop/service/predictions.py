"""What the service does with each prediction: an event, a log line, a JSON line, a class LED.

``prediction()`` turns a sample's confidences into the data of a ``prediction`` event; the
``PredictionReporter`` listens to those events (or is handed one prediction by ``report``).
"""

import json
import logging
import math
import os
import time
from pathlib import Path

import numpy as np

_log = logging.getLogger(__name__)


def prediction(sample, scores, step, class_names) -> dict:
    """The ``prediction`` event's data for ``sample`` (a ``capture.Sample``) and ``scores``
    (float (C,) confidences), made by the model at training step ``step``."""
    index = int(np.argmax(scores))
    return {"index": index, "class": class_names[index], "confidence": float(scores[index]),
            "scores": [round(float(v), 4) for v in scores], "label": sample.label, "step": int(step),
            "time": float(sample.time)}


class PredictionReporter:
    """Logs each prediction (info if ``log_all``, else debug), appends it to ``jsonl``
    (rotated at ``max_bytes``, one old file kept) and lights the class LED.

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

    def report(self, sample, scores, step):
        """scores: float (C,) confidences for one sample; step: the model's training step.
        Returns (class index, confidence)."""
        data = prediction(sample, scores, step, self.class_names)
        self.record(data)
        return data["index"], data["confidence"]

    def on_event(self, event) -> None:
        """An ``EventBus`` subscriber for ``prediction`` events."""
        self.record(event.data)

    def record(self, data) -> None:
        """Log, count, light and append one prediction (a ``prediction()`` dict)."""
        index, confidence, label = data["index"], data["confidence"], data["label"]
        self.count += 1
        if label is not None:
            self._hits = (self._hits + [index == label])[-self.window:]
        labelled = "" if label is None else f" (labelled {self.class_names[label]})"
        self.last = f"{self.class_names[index]} {confidence:.2f}{labelled}"
        _log.log(logging.INFO if self.log_all else logging.DEBUG, "prediction: %s", self.last)
        if self.lights is not None:
            self.lights.show_prediction(index)
        if self.jsonl is not None:
            when = data["time"]
            self._append({"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(when))
                          + f".{int(when % 1 * 1000):03d}Z",
                          "class": self.class_names[index], "index": index,
                          "confidence": round(confidence, 4), "label": label, "step": data["step"]})

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
