"""The small-data study (issue 14): how well each recipe learns from k labelled samples per class.

    scripts/small-data                              # k = 5, 10, 20, 50; 5 seeds; writes ./small-data.{json,md}
    scripts/small-data --quick                      # a smoke test: 1 seed, k = 5, 50 steps
    scripts/small-data --k 5,10 --seeds 2 --output-dir results
    python -m pi_backprop.study.small_data --list   # the recipes and baselines it knows

Data: scikit-learn's digits through the camera pipeline (``study.digits``), enlarged to the
input shape of the shipped camera model (``CAMERA_MODEL``); 700 images held out, the same
for every method; for each k and seed, k images per class drawn from the rest. Seed s
draws the samples and is the training seed (initial weights and data order) of every
recipe; the PyTorch twin of a recipe starts from the same weights and sees the same
batches. Methods: the recipes named (``study.recipes``), their PyTorch twins
(``study.torch_twin``) and the classical baselines (``study.baselines``) on the same pixels.
Reported: test accuracy, mean ± sample standard deviation (n − 1) over the seeds, on the
held-out images as scanned and on the same images moved and re-lit (``digits.moved_and_relit``,
as a camera would see them the next day).
"""

import argparse
import json
import statistics
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from ..exc import ConfigError, PiBackpropError
from ..modeldef import load_definition
from . import baselines as bl
from . import digits as dg
from . import recipes as rc
from . import torch_twin

CAMERA_MODEL = "camera_cnn"   # whose input shape the images are enlarged to
DEFAULT_K = (5, 10, 20, 50)
DEFAULT_SEEDS = 5
DEFAULT_RECIPES = tuple(rc.RECIPES)          # every recipe of the registry
DEFAULT_TORCH = ("shipped", "defaults")       # whose PyTorch twins run by default
QUICK = {"seeds": 1, "k": (5,), "steps": 50}
TORCH = "@torch"              # method name of a recipe's PyTorch twin: "<recipe>@torch"
OUTPUT_NAME = "small-data"    # small-data.json, small-data.md


def _log(message):
    print(message, file=sys.stderr, flush=True)


# -- running -----------------------------------------------------------------------------------

def run(recipe_names=DEFAULT_RECIPES, *, torch_names=(), baseline_names=tuple(bl.BASELINES), ks=DEFAULT_K,
        seeds=range(DEFAULT_SEEDS), steps=None, test_size=dg.TEST_SIZE, split_seed=dg.SPLIT_SEED, log=_log) -> dict:
    """Every method at every (k, seed); returns the results (JSON-able, see ``markdown``).

    recipe_names   : registry names (``recipes.RECIPES``), trained with pi-backprop's backend in use
    torch_names    : those of ``recipe_names`` whose PyTorch twin runs as well
    baseline_names : keys of ``baselines.BASELINES``
    steps          : training steps of every recipe (None: each recipe's own)
    log            : called with one line of progress per finished run
    """
    from .. import nn

    chosen = rc.lookup(recipe_names)
    torch_names = tuple(torch_names)
    stray = sorted(set(torch_names) - set(recipe_names))
    if stray:
        raise ConfigError(f"PyTorch twins asked for recipes not run: {', '.join(stray)}")
    unknown = sorted(set(baseline_names) - set(bl.BASELINES))
    if unknown:
        raise ConfigError(f"unknown baseline {unknown[0]!r}; known baselines: {', '.join(bl.BASELINES)}")
    ks, seeds = [int(k) for k in ks], [int(s) for s in seeds]
    if not ks or not seeds or not (chosen or baseline_names):
        raise ConfigError("nothing to run: give at least one k, one seed and one recipe or baseline")
    if steps is not None and steps < 1:
        raise ConfigError(f"steps must be >= 1, got {steps}")
    input_shape = load_definition(CAMERA_MODEL).input_shape
    definitions = [recipe.definition() for recipe in chosen]
    for recipe, definition in zip(chosen, definitions):
        recipe.trainer_options()   # refuses what cannot be run yet before anything trains
        if definition.input_shape != input_shape or len(definition.classes) != 10:
            raise ConfigError(f"recipe {recipe.name!r}: model {definition.name!r} takes {definition.input_shape} "
                              f"with {len(definition.classes)} classes; the study's digits are {input_shape}, "
                              "10 classes")
    data = dg.load(input_shape, test_size=test_size, split_seed=split_seed)
    for k in ks:
        data.draw(k, seeds[0])   # a k too large is refused before the first run
    total = len(ks) * len(seeds) * (len(chosen) + len(torch_names) + len(baseline_names))
    runs, draws, started = [], [], time.monotonic()

    def record(method, k, seed, accuracy, moved, seconds):
        runs.append({"method": method, "k": k, "seed": seed, "accuracy": accuracy, "moved_accuracy": moved,
                     "seconds": round(seconds, 3)})
        log(f"[{len(runs)}/{total}] k={k} seed={seed} {method}: {100 * accuracy:.1f}%, moved and re-lit "
            f"{100 * moved:.1f}% ({seconds:.1f} s; {time.monotonic() - started:.0f} s so far)")

    test = data.test_index
    moved = dg.moved_and_relit(data.x[test], split_seed)
    for k in ks:
        for seed in seeds:
            drawn = data.draw(k, seed)
            draws.append({"k": k, "seed": seed, "index": drawn.tolist()})
            for recipe, definition in zip(chosen, definitions):
                recipe_steps = steps or recipe.steps
                with rc.trainer_for(recipe, definition, data.x, data.y, drawn, test, seed, recipe_steps) as trainer:
                    twin = torch_twin.twin_of(trainer) if recipe.name in torch_names else None
                    start = time.perf_counter()
                    accuracy = rc.train(trainer, recipe_steps)
                    record(recipe.name, k, seed, accuracy, rc.accuracy(trainer, moved, data.y[test]),
                           time.perf_counter() - start)
                    if twin is not None:
                        start = time.perf_counter()
                        accuracy = torch_twin.train(twin, trainer, recipe_steps)
                        record(recipe.name + TORCH, k, seed, accuracy, torch_twin.accuracy(twin, moved, data.y[test]),
                               time.perf_counter() - start)
            for name in baseline_names:
                start = time.perf_counter()
                as_scanned, relit = bl.accuracies(name, data.x[drawn], data.y[drawn],
                                                  [(data.x[test], data.y[test]), (moved, data.y[test])])
                record(name, k, seed, as_scanned, relit, time.perf_counter() - start)
    methods = {recipe.name: f"{recipe.name} (pi-backprop {nn.get_backend()})" for recipe in chosen}
    methods.update({name + TORCH: f"{name} (PyTorch)" for name in torch_names})
    methods.update({name: bl.BASELINES[name] for name in baseline_names})
    methods = {name: methods[name] for name in _method_order(chosen, torch_names, baseline_names)}
    return {
        "date": time.strftime("%Y-%m-%d"), "machine": machine(), "seconds": round(time.monotonic() - started, 1),
        "config": {"k": ks, "seeds": seeds, "backend": nn.get_backend(), "input_shape": list(input_shape),
                   "test_size": int(len(test)), "split_seed": split_seed, "steps": steps,
                   "recipes": {recipe.name: recipe.to_dict() for recipe in chosen},
                   "torch": list(torch_names), "baselines": {name: bl.BASELINES[name] for name in baseline_names}},
        "methods": methods,
        "summary": summarise(runs, methods, ks),
        "summary_moved": summarise(runs, methods, ks, "moved_accuracy"),
        "moved": dict(dg.MOVED, seed=split_seed),
        "runs": runs,
        "test_index": test.tolist(),
        "draws": draws,
    }


def _method_order(chosen, torch_names, baseline_names):
    for recipe in chosen:
        yield recipe.name
        if recipe.name in torch_names:
            yield recipe.name + TORCH
    yield from baseline_names


def summarise(runs, methods, ks, key="accuracy") -> list:
    """[{"method", "k", "mean", "std", "n"}] of the runs' ``key`` over the seeds, in table
    order; std is the sample standard deviation (n − 1), None for a single seed."""
    rows = []
    for method in methods:
        for k in ks:
            values = [r[key] for r in runs if r["method"] == method and r["k"] == k]
            if values:
                rows.append({"method": method, "k": k, "mean": statistics.fmean(values),
                             "std": statistics.stdev(values) if len(values) > 1 else None, "n": len(values)})
    return rows


def machine() -> dict:
    from ..cli.benchmark import machine as bench_machine

    info = bench_machine()
    try:
        info["scikit-learn"] = version("scikit-learn")
    except PackageNotFoundError:
        pass
    return info


# -- reporting ---------------------------------------------------------------------------------

def _cell(row) -> str:
    if row is None:
        return "-"
    mean = f"{100 * row['mean']:.1f}"
    return mean if row["std"] is None else f"{mean} ± {100 * row['std']:.1f}"


def _grid(results, summary="summary"):
    """(header, [(label, [cell per k])]) of ``results[summary]``."""
    ks = results["config"]["k"]
    by_key = {(r["method"], r["k"]): r for r in results[summary]}
    header = ["method"] + [f"k={k}" for k in ks]
    return header, [(label, [_cell(by_key.get((method, k))) for k in ks]) for method, label in
                    results["methods"].items()]


def _caption(results) -> str:
    c = results["config"]
    seeds = c["seeds"]
    seed_text = f"seed {seeds[0]}" if len(seeds) == 1 else f"{len(seeds)} seeds ({seeds[0]}..{seeds[-1]})"
    shape = "×".join(map(str, c["input_shape"][1:]))
    return (f"digits enlarged to {shape} by the camera pipeline, {c['test_size']} held out (split seed "
            f"{c['split_seed']}); k labelled images per class; {seed_text}; test accuracy in %, mean ± std (n−1)")


def _machine_line(results) -> str:
    m = results["machine"]
    libraries = ", ".join(f"{name} {m[name]}" for name in ("numpy", "numba", "torch", "scikit-learn") if m.get(name))
    return (f"Machine: {m['cpu']}, {m['cores']} cores ({m['machine']}); Python {m['python']}, {libraries}; "
            f"pi-backprop {m['pi_backprop']}; {results['date']}; {results['seconds']:.0f} s in all.")


def _recipe_lines(results) -> list:
    c = results["config"]
    lines = []
    for name, recipe in c["recipes"].items():
        steps = c["steps"] or recipe["steps"]
        augment = "definition's own" if recipe["augment"] is None else (recipe["augment"] or "none")
        lines.append(f"{name}: {recipe['model']}, {recipe['optimizer']} lr {recipe['lr']:g}, batch "
                     f"{recipe['batch_size']}, {steps} steps, augmentation {augment}"
                     + "".join(f", {key} {value}" for key, value in recipe["options"].items())
                     + (f" ({recipe['description']})" if recipe["description"] else ""))
    if c["torch"]:
        lines.append(f"(PyTorch), <recipe>{TORCH} in the JSON: the same recipe in PyTorch, float32, one thread, "
                     "from the same samples, initial weights and batch order")
    return lines


TEST_SETS = (("summary", "as scanned"), ("summary_moved", "moved and re-lit"))


def _moved_line(results) -> str:
    m = results["moved"]
    return (f"moved and re-lit: the same held-out images turned by up to ±{m['rotate']:g}°, resized by up to "
            f"±{100 * m['scale']:g}%, moved by up to ±{m['shift']} px, then a gain of {m['gain'][0]:g}-"
            f"{m['gain'][1]:g}, an offset of ±{m['offset']:g} and a ramp of ±{m['ramp']:g} across the frame "
            f"(seed {m['seed']})")


def table(results) -> str:
    """Plain-text tables (as scanned, moved and re-lit) for a terminal or a log file (no
    colour, no redraws)."""
    lines = [_caption(results)]
    for summary, title in TEST_SETS:
        header, rows = _grid(results, summary)
        header = [f"{header[0]}: {title}", *header[1:]]
        widths = [max(len(header[0]), *(len(label) for label, _ in rows))]
        widths += [max(len(header[i + 1]), *(len(cells[i]) for _, cells in rows)) for i in range(len(header) - 1)]
        lines += ["", "  ".join([header[0].ljust(widths[0])] + [h.rjust(w) for h, w in zip(header[1:], widths[1:])])]
        lines.append("  ".join("-" * w for w in widths))
        for label, cells in rows:
            lines.append("  ".join([label.ljust(widths[0])] + [c.rjust(w) for c, w in zip(cells, widths[1:])]))
    lines += ["", _moved_line(results)] + _recipe_lines(results) + [_machine_line(results)]
    return "\n".join(lines) + "\n"


def markdown(results) -> str:
    lines = [f"### Small data: {_caption(results)}"]
    for summary, title in TEST_SETS:
        header, rows = _grid(results, summary)
        lines += ["", f"Test set {title}:", "", "| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
        lines += ["| " + " | ".join([label] + cells) + " |" for label, cells in rows]
    lines += ["", f"- {_moved_line(results)}"] + [f"- {line}" for line in _recipe_lines(results)]
    lines += ["", _machine_line(results)]
    return "\n".join(lines) + "\n"


def write(results, output_dir) -> tuple:
    """Write ``small-data.json`` and ``small-data.md`` into ``output_dir``; their paths."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = output_dir / f"{OUTPUT_NAME}.json", output_dir / f"{OUTPUT_NAME}.md"
    json_path.write_text(json.dumps(results, indent=1) + "\n")
    md_path.write_text(markdown(results))
    return json_path, md_path


# -- the command line --------------------------------------------------------------------------

def _names(text):
    return () if text.strip().lower() == "none" else tuple(n.strip() for n in text.split(",") if n.strip())


def _ints(text):
    try:
        return tuple(int(n) for n in text.split(",") if n.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="small-data", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:7]))
    parser.add_argument("--seeds", type=int, default=DEFAULT_SEEDS, help=f"seeds per k (default {DEFAULT_SEEDS})")
    parser.add_argument("--first-seed", type=int, default=0, help="seeds are first..first+N-1 (default 0)")
    parser.add_argument("--k", type=_ints, default=DEFAULT_K,
                        help="labelled images per class, comma-separated (default 5,10,20,50)")
    parser.add_argument("--steps", type=int, help="training steps of every recipe (default: each recipe's own)")
    parser.add_argument("--recipes", type=_names, default=DEFAULT_RECIPES,
                        help=f"comma-separated recipes (default {','.join(DEFAULT_RECIPES)}; see --list)")
    parser.add_argument("--torch", type=_names,
                        help=f"recipes whose PyTorch twin runs too (default: {','.join(DEFAULT_TORCH)} when torch "
                             "is installed; 'none' for none)")
    parser.add_argument("--baselines", type=_names, default=tuple(bl.BASELINES),
                        help=f"comma-separated baselines (default {','.join(bl.BASELINES)}; 'none' for none)")
    parser.add_argument("--backend", choices=("numba", "numpy"), default="numba",
                        help="pi-backprop's kernel backend (default numba)")
    parser.add_argument("--split-seed", type=int, default=dg.SPLIT_SEED,
                        help=f"seed of the {dg.TEST_SIZE} held-out images (default {dg.SPLIT_SEED})")
    parser.add_argument("--output-dir", default=".", help=f"where {OUTPUT_NAME}.json and .md go (default .)")
    parser.add_argument("--quick", action="store_true",
                        help=f"a smoke test: {QUICK['seeds']} seed, k={QUICK['k'][0]}, {QUICK['steps']} steps "
                             "(unless --steps)")
    parser.add_argument("--list", action="store_true", help="list the recipes and baselines, and exit")
    parser.add_argument("--sensor", action="store_true",
                        help="the simulated-sensor part instead: sensor_mlp with each augmentation "
                             "(k = 3, 5, 10; 4 seeds); prints its table")
    parser.add_argument("--service", action="store_true",
                        help="the service part instead: run --simulate on the simulated camera until 95%% "
                             "validation accuracy, with and without camera_cnn's [augment]; prints its table")
    return parser


def _list() -> str:
    lines = ["recipes:"]
    lines += [f"  {r.name:<18} {r.description or r.model}" for r in rc.RECIPES.values()]
    lines += ["baselines:"] + [f"  {name:<18} {text}" for name, text in bl.BASELINES.items()]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.list:
        print(_list())
        return 0
    seeds, ks, steps = args.seeds, args.k, args.steps
    if args.quick:
        seeds, ks, steps = QUICK["seeds"], QUICK["k"], steps or QUICK["steps"]
    try:
        if seeds < 1:
            raise ConfigError(f"--seeds must be >= 1, got {seeds}")
        torch_names = args.torch
        if torch_names is None:
            torch_names = tuple(n for n in DEFAULT_TORCH if n in args.recipes) if torch_twin.available() else ()
            if not torch_twin.available():
                _log(f"small-data: torch is not installed, no PyTorch twins ({torch_twin.TORCH_HINT})")
        from .. import nn

        nn.set_backend(args.backend)
        if args.sensor:
            from . import sensor_windows
            print(sensor_windows.markdown(sensor_windows.run(log=_log)), flush=True)
            return 0
        if args.service:
            from . import camera_service
            print(camera_service.markdown(camera_service.run(range(args.first_seed, args.first_seed + seeds),
                                                             log=_log)), flush=True)
            return 0
        results = run(args.recipes, torch_names=torch_names, baseline_names=args.baselines, ks=ks,
                      seeds=range(args.first_seed, args.first_seed + seeds), steps=steps, split_seed=args.split_seed)
        paths = write(results, args.output_dir)
    except PiBackpropError as error:
        print(f"small-data: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("small-data: interrupted", file=sys.stderr)
        return 130
    print(table(results), flush=True)
    _log(f"wrote {paths[0]} and {paths[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
