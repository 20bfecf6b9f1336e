"""``pi-backprop bench``: training steps of pi-backprop (numba, numpy) and PyTorch side by
side, start-up time and peak memory; writes bench.json and bench.md (see BENCHMARKS.md)."""

from ..exc import ConfigError


def add_arguments(parser):
    parser.add_argument("--output-dir", default=".", help="where bench.json and bench.md go (default: .)")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved repeats per measurement (default 7)")
    parser.add_argument("--block-seconds", type=float, default=0.1,
                        help="seconds of steps per timed block (default 0.1)")
    parser.add_argument("--single-thread-only", action="store_true", help="skip the default-threads run")
    parser.add_argument("--quick", action="store_true", help="3 short repeats: a smoke test, not a measurement")
    parser.add_argument("--wear-seconds", type=float, default=120.0,
                        help="seconds the service runs for each SD-card wear case (default 120; 0: skip)")
    parser.add_argument("--wear-only", action="store_true", help="only the SD-card wear figures")
    parser.add_argument("--page-seconds", type=float, default=10.0,
                        help="seconds of each window of the web page's cost, with and without a page "
                             "(default 10; 0: skip)")
    parser.add_argument("--page-only", action="store_true", help="only the web page's cost")


def run(args) -> int:
    if args.repeats < 1 or args.block_seconds <= 0:
        raise ConfigError(f"--repeats must be >= 1 and --block-seconds > 0, got {args.repeats}, {args.block_seconds}")
    from . import benchmark as bench

    if args.wear_seconds < 0 or (args.wear_only and not args.wear_seconds):
        raise ConfigError(f"--wear-seconds must be > 0 (>= 0 without --wear-only), got {args.wear_seconds}")
    if args.page_seconds < 0 or (args.page_only and not args.page_seconds):
        raise ConfigError(f"--page-seconds must be > 0 (>= 0 without --page-only), got {args.page_seconds}")
    if args.wear_only and args.page_only:
        raise ConfigError("--wear-only and --page-only: choose one")
    _, text = bench.main(args.output_dir, args.repeats, args.block_seconds,
                         default_threads=not args.single_thread_only, quick=args.quick,
                         wear_seconds=0.0 if args.page_only else args.wear_seconds, wear_only=args.wear_only,
                         page_seconds=0.0 if args.wear_only else args.page_seconds, page_only=args.page_only)
    print(text)
    return 0
