"""The benchmark's web-page figure: training steps per second of the service with one page
open, against the same service with none.

``pi-backprop run --simulate`` runs as a child process on camera_cnn with a store of
``SAMPLES`` labelled frames (nobody labels; it trains all the time: ``rest_after_epochs =
0``) and the simulated camera capturing every ``INTERVAL`` s, so that each picture the page
asks for is a new capture to encode. Windows of ``seconds`` without a page and with one
alternate, ``pairs`` times; the steps per second of each window come from the service's
status lines (``status_interval`` 0.25 s, in both), read from its log pipe.

The page is ``PageClient``: the requests the shipped page makes, from this process (as a
phone would, from another machine): its files and first JSON once, the event stream all the
time (reloading the overview at each checkpoint, as the page does), and the camera frame
with the model input of that same capture at the configured ``web.fps`` (default 4).
"""

import http.client
import os
import re
import statistics
import tempfile
import threading
import time
from pathlib import Path

from .service_child import ServiceChild, fill_store

MODEL = "camera_cnn"
SAMPLES = 400
INTERVAL = 0.25             # seconds between captures: one new frame per picture at 4 fps
PAIRS = 6                   # windows without and with a page
WARM_UP = 10.0              # seconds of training before the first window
STATUS = re.compile(r": step (\d+), ")
URL = re.compile(r"web page: http://127\.0\.0\.1:(\d+)/")


def _config(fps: float | None) -> str:
    web = "" if fps is None else f"fps = {fps}\n"
    return (f'[model]\nname = "{MODEL}"\n[source]\nkind = "simulated-camera"\ninterval = {INTERVAL}\n'
            f"[labels]\nsimulated = false\n[training]\nmin_samples_per_class = 5\nrest_after_epochs = 0\n"
            f"[service]\nstatus_interval = 0.25\n[web]\nport = 0\n{web}")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far, all its threads (Linux ``/proc``)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Steps:
    """(monotonic time, step) from each status line of the child's log."""

    def __init__(self):
        self._lock = threading.Lock()
        self.seen = []

    def on_line(self, line: str, now: float) -> None:
        match = STATUS.search(line)
        if match:
            with self._lock:
                self.seen.append((now, int(match.group(1))))

    def rate(self, start: float, end: float) -> float:
        """Steps per second between the first and the last status line in [start, end]."""
        with self._lock:
            inside = [(t, step) for t, step in self.seen if start <= t <= end]
        if len(inside) < 2 or inside[-1][0] == inside[0][0]:
            raise RuntimeError(f"too few status lines between {start:.1f} and {end:.1f} s")
        return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])


class PageClient:
    """What one open page asks of the service, in two threads, until ``close()``; counts the
    requests, the bytes it got, and the answers that were not 200 (``failed``)."""

    def __init__(self, port: int, fps: float):
        self.port, self.fps = port, fps
        self.requests = self.bytes = self.failed = 0
        self._count_lock = threading.Lock()
        self._closing = threading.Event()
        self._stream = None
        for path in ("/", "/app.js", "/app.css", "/api/status", "/api/overview", "/api/history",
                     "/api/samples?class=0"):
            self._get(path)
        self._threads = [threading.Thread(target=self._pictures, daemon=True),
                         threading.Thread(target=self._events, daemon=True)]
        for thread in self._threads:
            thread.start()

    def _get(self, path: str, connection=None) -> tuple[int, dict, bytes]:
        own = connection is None
        connection = connection or http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            body = response.read()
        finally:
            if own:
                connection.close()
        self._count(1, len(body), failed=response.status != 200)
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body

    def _count(self, requests: int, size: int, failed: bool = False) -> None:
        with self._count_lock:
            self.requests += requests
            self.bytes += size
            self.failed += failed

    def _pictures(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)   # kept alive, as a browser does
        while not self._closing.is_set():
            started = time.monotonic()
            status, headers, _ = self._get("/api/frame?view=camera", connection)
            if status == 200:
                self._get(f"/api/frame?view=input&capture={headers['x-capture']}", connection)
            self._closing.wait(max(0.0, 1.0 / self.fps - (time.monotonic() - started)))
        connection.close()

    def _events(self) -> None:
        self._stream = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        self._stream.request("GET", "/api/events")
        response = self._stream.getresponse()
        self._count(1, 0)
        try:
            while not self._closing.is_set():
                line = response.readline()
                if not line:
                    return
                self._count(0, len(line))
                if line.startswith(b"event: checkpoint"):
                    self._get("/api/overview")
        except OSError:
            return   # closed by close()

    def running(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    def close(self) -> None:
        self._closing.set()
        if self._stream is not None and self._stream.sock is not None:
            self._stream.sock.close()
        for thread in self._threads:
            thread.join(timeout=15)


def measure(seconds: float = 10.0, pairs: int = PAIRS, fps: float | None = None, workdir: Path | None = None,
            env: dict | None = None) -> dict:
    """Alternating windows without and with one page; steps per second of each, the median
    drop, and what the page fetched. ``fps``: the page's frame rate (None: the default)."""
    folder = Path(tempfile.mkdtemp(prefix="page-cost-", dir=workdir))
    config, state = folder / "config.toml", folder / "state"
    config.write_text(_config(fps))
    fill_store(state, MODEL, SAMPLES)
    steps = Steps()
    without, with_page, fetched = [], [], []
    with ServiceChild(config, state, env, on_line=steps.on_line) as child:
        child.wait_for("ready:")
        port = int(URL.search(child.log.read()).group(1))
        deadline = time.monotonic() + 600
        while not steps.seen:   # the first compile, then training
            if not child.running() or time.monotonic() > deadline:
                raise RuntimeError(f"the service did not train: {child.log.read()[-2000:]}")
            time.sleep(0.2)
        time.sleep(WARM_UP)
        rate_fps = fps or 4.0
        for _ in range(pairs):
            start, cpu = time.monotonic(), _cpu_seconds(child.pid)
            time.sleep(seconds)
            end = time.monotonic()
            without.append((steps.rate(start, end), (_cpu_seconds(child.pid) - cpu) / (end - start)))
            page = PageClient(port, rate_fps)
            start, cpu = time.monotonic(), _cpu_seconds(child.pid)
            time.sleep(seconds)
            end = time.monotonic()
            cores = (_cpu_seconds(child.pid) - cpu) / (end - start)
            page.close()
            with_page.append((steps.rate(start, end), cores))
            fetched.append((page.requests / (end - start), page.bytes / (end - start), page.failed))
    drops = [1 - w / wo for (wo, _), (w, _) in zip(without, with_page)]
    return {"model": MODEL, "interval": INTERVAL, "fps": rate_fps, "seconds": seconds, "pairs": pairs,
            "without": [rate for rate, _ in without], "with_page": [rate for rate, _ in with_page],
            "cores_without": [cores for _, cores in without], "cores_with_page": [cores for _, cores in with_page],
            "drop": statistics.median(drops), "drops": drops,
            "requests_per_second": statistics.median(r for r, _, _ in fetched),
            "bytes_per_second": statistics.median(b for _, b, _ in fetched), "failed": sum(f for _, _, f in fetched)}


def markdown(result: dict) -> str:
    from ..budget import size_text

    def spread(values, scale=1.0, digits=0):
        return f"{min(values) * scale:.{digits}f}–{max(values) * scale:.{digits}f}"
    return "\n".join([
        "| no page: steps/s | one page: steps/s | drop (median) | drop (range) | service CPU, no page | "
        "with one | page fetched |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {spread(result['without'])} | {spread(result['with_page'])} | **{result['drop']:.1%}** | "
        f"{spread(result['drops'], 100, 1)}% | {statistics.median(result['cores_without']):.2f} cores | "
        f"{statistics.median(result['cores_with_page']):.2f} cores | {result['requests_per_second']:.1f} requests/s, "
        f"{size_text(result['bytes_per_second'])}/s, {result['failed']} not answered 200 |",
        "",
        f"{MODEL}, {SAMPLES} stored samples, a capture every {result['interval']:g} s, the page at "
        f"{result['fps']:g} frames a second; {result['pairs']} pairs of {result['seconds']:g} s windows, alternating."])
