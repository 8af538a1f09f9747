"""The ``ssd-fast`` command line."""
import argparse
import sys

import torch


def _bench(args):
    from . import bench

    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    if "cuda" in devices and not torch.cuda.is_available():
        if args.device == "cuda":
            sys.exit("ssd-fast bench: --device cuda asked for, but no CUDA device is available")
        devices.remove("cuda")
    ops = args.ops.split(",") if args.ops else None
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
          + (f", {torch.cuda.get_device_name()}" if "cuda" in devices else ""))
    print(bench.HEADER)
    for row in bench.run(devices, ops, args.min_seconds):
        print(bench.format_row(row), flush=True)


def build_parser():
    p = argparse.ArgumentParser(prog="ssd-fast", description="Fast SSD: ops, training, evaluation.")
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("bench", help="time the ops against torchvision and the references")
    b.add_argument("--device", choices=["cpu", "cuda", "all"], default="all",
                   help="where to run (default: all available)")
    b.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's)")
    b.add_argument("--ops", default="", help="comma-separated op names (default: all)")
    b.add_argument("--min-seconds", type=float, default=0.3,
                   help="time each implementation for at least this long")
    b.set_defaults(func=_bench)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if getattr(args, "threads", 0) < 0:
        build_parser().error(f"--threads must be >= 0, got {args.threads}")
    return args.func(args)


if __name__ == "__main__":
    main()
