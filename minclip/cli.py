"""The `minclip` command line: `minclip --version`, `minclip info` (more subcommands in later modules)."""
import argparse
import sys

from . import __version__, backend


def cmd_info(args):
    """Print the backend, device and BLAS that minclip will use."""
    if args.backend:
        backend.use(args.backend)
    for k, v in backend.info().items():
        print(f"{k:14s} {v}")
    return 0


def build_parser():
    p = argparse.ArgumentParser(prog="minclip", description="CLIP from scratch on NumPy/CuPy.")
    p.add_argument("--version", action="version", version=f"minclip {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    info = sub.add_parser("info", help="show backend, device and BLAS")
    info.add_argument("--backend", choices=["numpy", "cupy"], help="backend to report on")
    info.set_defaults(func=cmd_info)
    return p


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, backend.BackendError) as e:  # errors for people: one line, no traceback
        print(f"minclip: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
