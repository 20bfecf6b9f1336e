"""Which label a captured sample gets: commands per source, once-only labels, hold-mode levels."""

import logging

from pi_backprop.service.labelling import Labelling

CLASSES = ("cup", "pen", "key")


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_nothing_held_means_unlabelled():
    assert Labelling(CLASSES).take() is None


def test_a_hold_labels_every_sample_until_the_same_source_stops_it():
    labelling = Labelling(CLASSES)
    labelling.start(1, "web")
    assert [labelling.take() for _ in range(3)] == [1, 1, 1]
    assert labelling.stop("mqtt") is False          # another source cannot end it
    assert labelling.take() == 1
    assert labelling.stop("web") is True
    assert labelling.take() is None


def test_a_hold_with_seconds_runs_out_on_its_own():
    clock = Clock()
    labelling = Labelling(CLASSES, clock=clock)
    labelling.start(2, "web", seconds=5)
    clock.now += 4.9
    assert labelling.take() == 2 and labelling.held() == {"web": 2}
    clock.now += 0.2
    assert labelling.take() is None and labelling.held() == {}


def test_next_labels_one_sample_and_wins_over_a_hold():
    labelling = Labelling(CLASSES)
    labelling.start(0, "web")
    labelling.next(2)
    labelling.next(1)               # the later call wins
    assert [labelling.take() for _ in range(3)] == [1, 0, 0]


def test_peek_tells_the_label_to_come_without_using_it_up(caplog):
    labelling = Labelling(CLASSES)
    assert labelling.peek() is None
    labelling.start(0, "web")
    labelling.next(2)
    assert labelling.peek() == 2 and labelling.peek() == 2     # the next label stays for take()
    assert labelling.take() == 2 and labelling.peek() == 0
    labelling.start(1, "mqtt")
    with caplog.at_level(logging.WARNING, logger="pi_backprop"):
        assert labelling.peek() is None                         # ambiguous: nothing, and no warning
    assert "held together" not in caplog.text


def test_a_yielding_source_gives_way_to_any_other_hold(caplog):
    labelling = Labelling(CLASSES, yielding=("simulated operator",))
    labelling.start(0, "simulated operator")
    assert labelling.take() == 0 and labelling.ruling_class() is None   # the operator alone rules nothing
    labelling.start(2, "web")
    assert labelling.ruling_class() == 2
    with caplog.at_level(logging.WARNING, logger="pi_backprop"):
        assert labelling.take() == 2 and labelling.peek() == 2   # no conflict: the person's hold rules
    assert "held together" not in caplog.text
    labelling.stop("web")
    assert labelling.take() == 0


def test_two_classes_held_together_leave_samples_unlabelled_with_one_warning(caplog):
    labelling = Labelling(CLASSES)
    labelling.start(0, "web")
    labelling.start(2, "mqtt")
    with caplog.at_level(logging.WARNING, logger="pi_backprop"):
        assert [labelling.take() for _ in range(3)] == [None, None, None]
    assert caplog.text.count("held together") == 1 and "'cup', 'key'" in caplog.text
    labelling.stop("mqtt")
    assert labelling.take() == 0


def test_hold_mode_buttons_are_read_at_each_capture_and_agree_with_commands():
    pressed = {"index": None}
    labelling = Labelling(CLASSES)
    labelling.add_level(lambda: pressed["index"])
    assert labelling.take() is None
    pressed["index"] = 1
    assert labelling.take() == 1
    labelling.start(1, "web")        # the same class from two clients is not a conflict
    assert labelling.take() == 1
    labelling.start(0, "web")
    assert labelling.take() is None
    pressed["index"] = None
    assert labelling.take() == 0
