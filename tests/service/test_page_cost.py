"""The web-page cost benchmark's parts against the real service: the page it stands in for
asks what the shipped page asks and gets answers, and the step rate is read from the log."""

import pytest
from running_service import running, wait_for, write_config

from pi_backprop.cli import page_cost

CAMERA = {"source": {"kind": "simulated-camera", "interval": 0.05}, "model": {"name": "camera_cnn"}}


def test_the_stand_in_page_fetches_frames_with_their_inputs_and_follows_the_events(tmp_path):
    config = write_config(tmp_path / "c.toml", **CAMERA)
    with running(config, tmp_path / "state") as service:
        wait_for(lambda: service.web is not None and service.live.newest() is not None, what="the page and a frame")
        page = page_cost.PageClient(service.web.port, fps=5)
        wait_for(lambda: page.requests >= 7 + 8 + 1, what="the page's files, four frame pairs and the stream")
        page.close()
    assert page.failed == 0, page.failed
    assert page.bytes > 10_000                                 # pictures, not just headers
    assert not page.running()                                  # close() ended its threads


def test_steps_per_second_come_from_the_status_lines_between_two_times():
    steps = page_cost.Steps()
    lines = [(0.5, "2026-12-04 10:00:00 INFO    pi_backprop.service: step 90, loss 0.400, 400 samples\n"),
             (1.0, "2026-12-04 10:00:00 INFO    pi_backprop.service: step 100, loss 0.300, 400 samples\n"),
             (1.5, "2026-12-04 10:00:01 INFO    pi_backprop.service: checkpoint ckpt-000150 (step 150)\n"),
             (2.0, "2026-12-04 10:00:01 INFO    pi_backprop.service: step 300, loss 0.200, val acc 90.0%, "
                   "400 samples\n")]
    for now, line in lines:
        steps.on_line(line, now)
    assert steps.rate(0.9, 2.1) == pytest.approx(200.0)    # (300 - 100) / (2.0 - 1.0); the checkpoint line is not one
    with pytest.raises(RuntimeError, match="too few status lines"):
        steps.rate(1.9, 3.0)


@pytest.mark.slow
def test_the_benchmark_measures_a_service_child_with_and_without_the_page(tmp_path):
    result = page_cost.measure(seconds=2.0, pairs=1, workdir=tmp_path)
    assert result["without"][0] > 0 and result["with_page"][0] > 0
    assert result["failed"] == 0 and result["requests_per_second"] > 4   # pairs of pictures at 4 a second, and more
    assert "| no page: steps/s |" in page_cost.markdown(result)
