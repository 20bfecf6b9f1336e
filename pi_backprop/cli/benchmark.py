"""The side-by-side benchmark: pi-backprop (numba, numpy) against PyTorch CPU.

``main()`` (``pi-backprop bench``, ``scripts/bench``) runs the measurements in child
processes, so that thread limits are set before numpy/torch load and start-up and memory
are measured from a fresh interpreter:

* steps      ``python -m pi_backprop.cli.benchmark steps``: every workload, candidates interleaved
             (A B C A B C ...), medians of repeats after warm-up; plus single-sample predict
             latency and numpy's float32 matmul GFLOP/s (512³).
* startup    time from interpreter start to the first finished training step, with an
             empty and with a warm numba cache.
* rss        peak RSS of 50 training steps of W2 at batch 64.

torch is imported only here, and only when installed (``pip install -e .[bench]``).
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from . import page_cost, wear

# (workload, model, batches); SGD lr 0.01, float32, the model's own loss.
WORKLOADS = [("W1", "sensor_mlp", (1, 16, 128)), ("W2", "camera_cnn", (1, 16, 64)), ("W3", "seed_mlp", (1, 32))]
PREDICT_WORKLOADS = [("W1", "sensor_mlp"), ("W2", "camera_cnn")]
# the speed targets: numba's speed-up over PyTorch (time ratio), single thread.
TARGETS = {("W1", 1): 50, ("W1", 16): 20, ("W1", 128): 5, ("W2", 1): 5, ("W2", 16): 1.5, ("W2", 64): 1.2,
           ("W3", 1): 10, ("W3", 32): 3}
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


# -- the training steps of each candidate -------------------------------------------------------

def step_flops(model, batch) -> int:
    """Floating-point operations of one training step's products: forward 2·MACs, weight
    gradient 2·MACs, input gradient 2·MACs except for the first layer (nobody computes it)."""
    from ..nn import layers as L
    total = 0
    shape = model.input_shape
    for index, (layer, out_shape) in enumerate(zip(model.layers, model.output_shapes)):
        if isinstance(layer, L.Dense):
            macs = layer.in_features * layer.out_features
        elif isinstance(layer, L.Conv2D):
            macs = int(np.prod(out_shape)) * shape[0] * layer.kernel_size[0] * layer.kernel_size[1]
        else:
            macs = 0
        total += batch * macs * (4 if index == 0 else 6)
        shape = out_shape
    return total


def _data(definition, batch, dtype=np.float32):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch,) + definition.input_shape).astype(dtype)
    return x, rng.integers(0, len(definition.classes), batch)


def ours(backend, name, batch):
    """A closure that runs one training step of pi-backprop with ``backend``."""
    import pi_backprop as pb
    definition = pb.load_definition(name)
    pb.set_backend(backend)
    model = definition.build(seed=0)
    loss, optimizer = definition.make_loss(), pb.SGD(model, lr=0.01)
    x, t = _data(definition, batch)

    def step():
        if pb.get_backend() != backend:  # candidates alternate in one process
            pb.set_backend(backend)
        model.train_step(x, t, loss, optimizer)
    return step, model


def ours_predict(backend, name):
    import pi_backprop as pb
    definition = pb.load_definition(name)
    pb.set_backend(backend)
    model = definition.build(seed=0)
    x, _ = _data(definition, 1)

    def step():
        if pb.get_backend() != backend:
            pb.set_backend(backend)
        model.predict(x)
    return step


def torch_model(definition):
    """The same architecture in PyTorch (weights: PyTorch's default initialisation; dropout:
    PyTorch's own, which draws other masks than ours)."""
    import torch

    from ..nn import layers as L
    modules = []
    for layer in definition.build(seed=0).layers:
        if isinstance(layer, L.Dense):
            modules.append(torch.nn.Linear(layer.in_features, layer.out_features))
        elif isinstance(layer, L.Conv2D):
            modules.append(torch.nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                                           layer.stride, layer.padding))
        elif isinstance(layer, L.MaxPool2D):
            modules.append(torch.nn.MaxPool2d(layer.pool_size, layer.stride))
        elif isinstance(layer, L.AvgPool2D):
            modules.append(torch.nn.AvgPool2d(layer.pool_size, layer.stride))
        elif isinstance(layer, L.GlobalAvgPool2D):
            modules.append(torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()))  # one per layer
        elif isinstance(layer, L.Dropout):
            modules.append(torch.nn.Dropout(layer.p))
        else:
            modules.append({L.Flatten: torch.nn.Flatten, L.ReLU: torch.nn.ReLU, L.Sigmoid: torch.nn.Sigmoid,
                            L.Tanh: torch.nn.Tanh}[type(layer)]())
    return torch.nn.Sequential(*modules)


def torch_step(name, batch):
    import torch

    from ..modeldef import load_definition
    definition = load_definition(name)
    model = torch_model(definition)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, t = _data(definition, batch)
    x, t = torch.from_numpy(x), torch.from_numpy(t)
    if definition.loss == "mse":
        target = torch.nn.functional.one_hot(t, len(definition.classes)).float()

        def loss_of(y):
            return 0.5 * ((y - target) ** 2).sum() / y.shape[0]
    else:
        cross_entropy = torch.nn.CrossEntropyLoss()

        def loss_of(y):
            return cross_entropy(y, t)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss_of(model(x)).backward()
        optimizer.step()
    return step


def torch_predict(name):
    import torch

    from ..modeldef import load_definition
    definition = load_definition(name)
    model = torch_model(definition).eval()
    x = torch.from_numpy(_data(definition, 1)[0])

    def step():
        with torch.no_grad():
            model(x)
    return step


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


# -- timing ----------------------------------------------------------------------------------------

def _per_call(fn, seconds):
    """Seconds per call of fn, from as many calls as fit in about ``seconds``."""
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return elapsed / calls


def interleaved(candidates, repeats, block_seconds):
    """{name: median seconds per call}; candidates run A B C A B C ... after a warm-up."""
    for fn in candidates.values():
        _per_call(fn, block_seconds)  # warm-up (and, for numba, compile)
    samples = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            samples[name].append(_per_call(fn, block_seconds))
    return {name: statistics.median(values) for name, values in samples.items()}


def matmul_gflops(size=512, repeats=7) -> float:
    """numpy's float32 matmul rate (size³), best of ``repeats``."""
    a = np.random.default_rng(0).normal(size=(size, size)).astype(np.float32)
    a @ a
    best = min(_per_call(lambda: a @ a, 0.2) for _ in range(repeats))
    return 2 * size ** 3 / best / 1e9


def run_steps(repeats, block_seconds, threads) -> dict:
    """Every workload and candidate, in this process (thread limits already in place)."""
    import pi_backprop as pb
    have_torch = torch_available()
    if have_torch and threads:
        import torch
        torch.set_num_threads(threads)
    rows = []
    for workload, name, batches in WORKLOADS:
        for batch in batches:
            numba_step, model = ours("numba", name, batch)
            candidates = {"numba": numba_step, "numpy": ours("numpy", name, batch)[0]}
            if have_torch:
                candidates["torch"] = torch_step(name, batch)
            seconds = interleaved(candidates, repeats, block_seconds)
            flops = step_flops(model, batch)
            for candidate, value in seconds.items():
                rows.append({"workload": workload, "model": name, "batch": batch, "candidate": candidate,
                             "seconds_per_step": value, "flops_per_step": flops})
            print(f"  {workload} batch {batch:>3}: " + ", ".join(
                f"{c} {v * 1e3:.3f} ms" for c, v in seconds.items()), file=sys.stderr, flush=True)
    predict_rows = []
    for workload, name in PREDICT_WORKLOADS:
        candidates = {"numba": ours_predict("numba", name), "numpy": ours_predict("numpy", name)}
        if have_torch:
            candidates["torch"] = torch_predict(name)
        for candidate, value in interleaved(candidates, repeats, block_seconds).items():
            predict_rows.append({"workload": workload, "model": name, "candidate": candidate,
                                 "seconds_per_sample": value})
    augment_rows = augment_cost(repeats, block_seconds)
    pb.set_backend("numba")
    return {"steps": rows, "predict": predict_rows, "augment": augment_rows, "matmul_gflops": matmul_gflops(),
            "threads": threads or "default"}


AUGMENT_CASE = ("W2", "camera_cnn", 32)   # the measure: the augmentation's cost next to this step
AUGMENTATIONS = {"shipped camera_cnn [augment]": None,
                 "whole pixels only": {"shift": 3, "hflip": True, "brightness": 0.2, "contrast": 0.2, "noise": 0.03}}


def augment_cost(repeats, block_seconds) -> list:
    """Each augmentation's time per batch next to the training step of AUGMENT_CASE, both
    backends (the numba backend augments with its compiled pass, numpy with numpy)."""
    import pi_backprop as pb

    from ..nn.augment import Augment
    workload, name, batch = AUGMENT_CASE
    definition = pb.load_definition(name)
    rows = []
    for backend in ("numba", "numpy"):
        step, _ = ours(backend, name, batch)
        x, _ = _data(definition, batch)
        for label, table in AUGMENTATIONS.items():
            augment = Augment.from_table(definition.augment if table is None else table, definition.input_shape)
            counter = iter(range(1 << 62))

            def augmented(augment=augment, counter=counter, backend=backend):
                if pb.get_backend() != backend:
                    pb.set_backend(backend)
                augment.apply(x, 0, next(counter))
            seconds = interleaved({"step": step, "augment": augmented}, repeats, block_seconds)
            rows.append({"workload": workload, "batch": batch, "backend": backend, "augmentation": label,
                         "table": augment.to_table(), "step_seconds": seconds["step"],
                         "augment_seconds": seconds["augment"]})
    return rows


# -- start-up and memory, each in a fresh interpreter ----------------------------------------------

_STARTUP = """
import time, sys
start = float(sys.argv[1])
import numpy as np
if sys.argv[2] == "torch":
    import torch
    torch.set_num_threads(1)
    from pi_backprop.cli.benchmark import torch_step
    torch_step("sensor_mlp", 16)()
else:
    import pi_backprop as pb
    pb.set_backend(sys.argv[2])
    model = pb.load_model("sensor_mlp", seed=0)
    x = np.random.default_rng(0).normal(size=(16, 32)).astype(np.float32)
    model.train_step(x, np.arange(16) % 4, pb.SoftmaxCrossEntropy(), pb.SGD(model, lr=0.01))
print(time.time() - start)
"""

# VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over fork+exec, so a child
# would report its parent's peak.
_RSS = """
import sys
import numpy as np
if sys.argv[1] == "numba floor":  # what numba itself costs: import, one tiny cached kernel
    from pi_backprop.nn.engine.ops.elementwise import _sgd_update
    _sgd_update(np.zeros(3, np.float32), np.zeros(3, np.float32), np.zeros(3, np.float32),
                np.float32(0.1), np.float32(0), np.float32(0))
    step = lambda: None
elif sys.argv[1] == "torch":
    import torch
    torch.set_num_threads(1)
    from pi_backprop.cli.benchmark import torch_step
    step = torch_step("camera_cnn", 64)
else:
    from pi_backprop.cli.benchmark import ours
    step = ours(sys.argv[1], "camera_cnn", 64)[0]
for _ in range(50):
    step()
for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
        print(int(line.split()[1]) * 1024)
"""


def _child(code, *args, env):
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def run_startup(env, candidates) -> dict:
    """Seconds from interpreter start to the first finished step (W1, batch 16)."""
    results = {}
    with tempfile.TemporaryDirectory() as cache:
        child_env = dict(env, NUMBA_CACHE_DIR=cache)
        results["numba, empty cache"] = _child(_STARTUP, repr(time.time()), "numba", env=child_env)
        results["numba, warm cache"] = min(_child(_STARTUP, repr(time.time()), "numba", env=child_env)
                                           for _ in range(3))
    results["numpy"] = min(_child(_STARTUP, repr(time.time()), "numpy", env=env) for _ in range(3))
    if "torch" in candidates:
        results["torch"] = min(_child(_STARTUP, repr(time.time()), "torch", env=env) for _ in range(3))
    return results


def run_rss(env, candidates) -> dict:
    """Peak RSS in bytes of 50 steps of W2 at batch 64 (numba with a warm cache)."""
    with tempfile.TemporaryDirectory() as cache:
        child_env = dict(env, NUMBA_CACHE_DIR=cache)
        _child(_RSS, "numba", env=child_env)  # fills the cache
        results = {"numba": _child(_RSS, "numba", env=child_env)}
        _child(_RSS, "numba floor", env=child_env)
        results["numba floor (import + one cached kernel)"] = _child(_RSS, "numba floor", env=child_env)
    results["numpy"] = _child(_RSS, "numpy", env=env)
    if "torch" in candidates:
        results["torch"] = _child(_RSS, "torch", env=env)
    return results


# -- the report -----------------------------------------------------------------------------------

def _version(package):
    # From the package metadata: importing torch or numba here would bloat every child.
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "machine": platform.machine(),
            "python": platform.python_version(), "numpy": np.__version__, "numba": _version("numba")}
    if _version("torch"):
        info["torch"] = _version("torch")
    from .. import __version__
    info["pi_backprop"] = __version__
    return info


def markdown(results) -> str:
    lines = []
    for mode in ("single_thread", "default_threads"):
        data = results.get(mode)
        if not data:
            continue
        title = "single thread" if mode == "single_thread" else "default threads"
        peak = data["matmul_gflops"]
        lines += [f"### Training steps, {title}", "",
                  f"float32, SGD; medians of {results['repeats']} interleaved repeats. numpy float32 "
                  f"matmul (512³) peak here: **{peak:.1f} GFLOP/s**.", "",
                  "| workload | batch | candidate | ms/step | steps/s | GFLOP/s | % of peak | vs PyTorch | target |",
                  "|---|---:|---|---:|---:|---:|---:|---:|---|"]
        by_key = {(r["workload"], r["batch"], r["candidate"]): r for r in data["steps"]}
        for row in data["steps"]:
            seconds = row["seconds_per_step"]
            gflops = row["flops_per_step"] / seconds / 1e9
            torch_row = by_key.get((row["workload"], row["batch"], "torch"))
            ratio = torch_row["seconds_per_step"] / seconds if torch_row else None
            target = ""
            if row["candidate"] == "numba" and mode == "single_thread" and ratio is not None:
                goal = TARGETS[(row["workload"], row["batch"])]
                target = f"≥ {goal:g}×: met"
                if ratio < goal:  # what meeting it would take, as a share of the matmul peak
                    needed = torch_row["seconds_per_step"] / goal
                    rate = row["flops_per_step"] / needed / 1e9
                    target = (f"≥ {goal:g}×: MISSED; needs {needed * 1e6:,.1f} µs = {rate:.0f} GFLOP/s "
                              f"({100 * rate / peak:.0f}% of peak)")
            lines.append(f"| {row['workload']} | {row['batch']} | {row['candidate']} | {seconds * 1e3:.3f} | "
                         f"{1 / seconds:,.0f} | {gflops:.2f} | {100 * gflops / peak:.0f}% | "
                         f"{'' if ratio is None else f'{ratio:.1f}×'} | {target} |")
        if data.get("augment"):
            lines += ["", f"### Augmentation next to the training step, {title}", "",
                      "| workload | batch | backend | augmentation | step ms | augment ms | share of the step |",
                      "|---|---:|---|---|---:|---:|---:|"]
            for row in data["augment"]:
                lines.append(f"| {row['workload']} | {row['batch']} | {row['backend']} | {row['augmentation']} "
                             f"`{row['table']}` | {row['step_seconds'] * 1e3:.3f} | "
                             f"{row['augment_seconds'] * 1e3:.3f} | "
                             f"{100 * row['augment_seconds'] / row['step_seconds']:.0f}% |")
        lines += ["", f"### Single-sample predict latency, {title}", "",
                  "| workload | candidate | µs/sample | vs PyTorch |", "|---|---|---:|---:|"]
        torch_predict_times = {r["workload"]: r["seconds_per_sample"] for r in data["predict"]
                               if r["candidate"] == "torch"}
        for row in data["predict"]:
            t = torch_predict_times.get(row["workload"])
            ratio = f"{t / row['seconds_per_sample']:.1f}×" if t else ""
            micros = row["seconds_per_sample"] * 1e6
            lines.append(f"| {row['workload']} | {row['candidate']} | {micros:.1f} | {ratio} |")
        lines.append("")
    if "startup" in results:
        lines += ["### Start to first finished training step (fresh process, W1 batch 16)", "",
                  "| candidate | seconds |", "|---|---:|"]
        lines += [f"| {name} | {value:.2f} |" for name, value in results["startup"].items()]
        lines.append("")
    if "rss" in results:
        lines += ["### Peak RSS, W2 batch 64, 50 steps (fresh process)", "", "| candidate | MiB |", "|---|---:|"]
        lines += [f"| {name} | {value / 2 ** 20:.0f} |" for name, value in results["rss"].items()]
        lines.append("")
    if "page" in results:
        lines += ["### The web page's cost: training steps per second of `run --simulate`, one page open against none",
                  "", page_cost.markdown(results["page"]), ""]
    if "wear" in results:
        lines += ["### SD-card wear: bytes written by `run --simulate` from READY on", "",
                  wear.markdown(results["wear"]), ""]
    m = results["machine"]
    lines.append(f"Machine: {m['cpu']}, {m['cores']} cores ({m['machine']}); Python {m['python']}, "
                 f"numpy {m['numpy']}, numba {m['numba']}" + (f", torch {m['torch']}" if "torch" in m else "")
                 + f"; pi-backprop {m['pi_backprop']}; {results['date']}.")
    return "\n".join(lines) + "\n"


def _single_thread_env():
    env = dict(os.environ)
    env.update({name: "1" for name in THREAD_VARIABLES})
    return env


def _steps_in_child(env, repeats, block_seconds, threads):
    out = subprocess.run([sys.executable, "-m", "pi_backprop.cli.benchmark", "steps", "--repeats", str(repeats),
                          "--block-seconds", str(block_seconds), "--threads", str(threads)],
                         stdout=subprocess.PIPE, text=True, env=env, check=True)
    return json.loads(out.stdout)


def main(output_dir=".", repeats=7, block_seconds=0.1, default_threads=True, quick=False,
         wear_seconds=120.0, wear_only=False, page_seconds=10.0, page_only=False) -> dict:
    """Run everything; write bench.json and bench.md into ``output_dir``; return the results."""
    if quick:
        repeats, block_seconds, wear_seconds = 3, 0.03, min(wear_seconds, 10.0)
        page_seconds = min(page_seconds, 3.0)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    results = {"date": time.strftime("%Y-%m-%d"), "repeats": repeats, "machine": machine()}
    if wear_seconds > 0:
        print(f"SD-card wear ({wear_seconds:g} s per case) ...", file=sys.stderr, flush=True)
        results["wear"] = wear.run_all(wear_seconds, output_dir)
    if page_seconds > 0:
        print(f"the web page's cost ({page_seconds:g} s windows) ...", file=sys.stderr, flush=True)
        results["page"] = page_cost.measure(page_seconds, pairs=1 if quick else page_cost.PAIRS, workdir=output_dir)
    if wear_only or page_only:
        return _written(output_dir, results)
    env = _single_thread_env()
    print("single thread ...", file=sys.stderr, flush=True)
    results["single_thread"] = _steps_in_child(env, repeats, block_seconds, 1)
    if default_threads:
        print("default threads ...", file=sys.stderr, flush=True)
        results["default_threads"] = _steps_in_child(dict(os.environ), repeats, block_seconds, 0)
    candidates = {r["candidate"] for r in results["single_thread"]["steps"]}
    print("start-up and memory ...", file=sys.stderr, flush=True)
    results["startup"] = run_startup(env, candidates)
    results["rss"] = run_rss(env, candidates)
    return _written(output_dir, results)


def _written(output_dir, results):
    (output_dir / "bench.json").write_text(json.dumps(results, indent=1) + "\n")
    text = markdown(results)
    (output_dir / "bench.md").write_text(text)
    return results, text


def _child_main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m pi_backprop.cli.benchmark")
    parser.add_argument("what", choices=["steps"])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--block-seconds", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=1, help="0: library defaults")
    args = parser.parse_args(argv)
    json.dump(run_steps(args.repeats, args.block_seconds, args.threads), sys.stdout)


if __name__ == "__main__":
    _child_main()
