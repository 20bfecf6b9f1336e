"""``pi-backprop run``: the service loop (what systemd starts; ``--simulate`` on a desktop)."""

import logging
import math

from ..logs import setup_logging
from ..service.config import load_config

_log = logging.getLogger("pi_backprop.run")


def add_arguments(parser):
    parser.add_argument("--config", metavar="FILE",
                        help="TOML config (the service uses /etc/pi-backprop/config.toml); default: built-in defaults")
    parser.add_argument("--simulate", action="store_true",
                        help="simulated camera/sensor and gpiozero mock pins, whatever the config says")
    parser.add_argument("--state-dir", metavar="DIR",
                        help="where the sample store and checkpoints live (default: service.state_dir, "
                             "$STATE_DIRECTORY, else ~/.local/state/pi-backprop)")
    parser.add_argument("--until-accuracy", type=float, metavar="A",
                        help="stop once the validation accuracy reaches A (0..1)")
    parser.add_argument("--max-seconds", type=float, metavar="S", help="stop after S seconds")
    parser.add_argument("--keep-serving", action="store_true",
                        help="once --until-accuracy or --max-seconds is reached, go on serving the web page "
                             "until stopped (Ctrl-C), so that it can be explored")


def run(args) -> int:
    from ..exc import ConfigError
    from ..service.loop import Service

    if args.until_accuracy is not None and not 0 < args.until_accuracy <= 1:
        raise ConfigError(f"--until-accuracy must be in (0, 1], got {args.until_accuracy}")
    if args.max_seconds is not None and not args.max_seconds > 0:
        raise ConfigError(f"--max-seconds must be > 0, got {args.max_seconds}")
    config = load_config(args.config)
    if not args.verbose:
        setup_logging(level=config.logging.level)
    if args.config is None:
        _log.info("no --config given: built-in defaults (source %s, model %s)",
                  config.source.kind, config.model.name)
    with Service(config, config_path=args.config, simulate=args.simulate, state_dir=args.state_dir,
                 until_accuracy=args.until_accuracy, max_seconds=args.max_seconds,
                 backend_chosen=args.backend is not None, keep_serving=args.keep_serving) as service:
        summary = service.run()
    accuracy = summary.get("accuracy")
    live = summary.get("live_accuracy")
    samples = "?" if summary["samples"] is None else summary["samples"]
    print(f"\nsummary: {samples} labelled samples, {summary['steps']} training steps, "
          f"validation accuracy {'-' if accuracy is None else f'{accuracy:.1%}'}, "
          f"live accuracy {'-' if live is None or math.isnan(live) else f'{live:.1%}'} (last 50 predictions)")
    unsaved = summary.get("unsaved_steps") or 0
    if summary.get("checkpoint"):
        lost = f" (the last {unsaved} steps were not saved: the checkpoint write failed)" if unsaved else ""
        print(f"checkpoint: {summary['checkpoint']}{lost}")
    elif unsaved:
        print(f"checkpoint: none written (the {unsaved} steps were not saved: the checkpoint write failed)")
    print(f"state: {summary['state_dir']} (run the same command again to resume)")
    return 0
