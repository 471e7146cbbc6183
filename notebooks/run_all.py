"""Re-execute the numbered notebooks in place, so the committed outputs come from the current code.

    python notebooks/run_all.py                 # every notebook, full training (the committed outputs)
    python notebooks/run_all.py 08 10           # only notebooks whose names start with 08 or 10
    python notebooks/run_all.py --quick         # MINCLIP_QUICK=1: the training notebooks train for seconds

Each notebook runs in a fresh `python3` kernel with notebooks/ as the working directory (nbclient);
the run time of each is printed, and the first error stops the script with the cell that failed.
The repository root is put on PYTHONPATH so the kernel imports this checkout's minclip.
"""
import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent


def numbered_notebooks(prefixes=()):
    """notebooks/NN_*.ipynb in order (the assignments folder is not part of the path)."""
    paths = sorted(p for p in HERE.glob("[0-9][0-9]_*.ipynb"))
    return [p for p in paths if not prefixes or p.name.startswith(tuple(prefixes))]


def run(path, quick=False, timeout=600):
    """Execute one notebook in place; returns its wall time in seconds."""
    os.environ["MINCLIP_QUICK"] = "1" if quick else "0"
    others = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE.parent)] + others)
    nb = nbformat.read(path, as_version=4)
    t = time.time()
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(HERE)}}).execute()
    seconds = time.time() - t
    nbformat.write(nb, path)
    return seconds


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("prefixes", nargs="*", help="run only notebooks whose names start with these (e.g. 03 08)")
    p.add_argument("--quick", action="store_true", help="set MINCLIP_QUICK=1: training notebooks train briefly")
    args = p.parse_args(argv)
    paths = numbered_notebooks(args.prefixes)
    if not paths:
        sys.exit(f"run_all: no notebook in {HERE} starts with {args.prefixes}")
    for path in paths:
        seconds = run(path, quick=args.quick)
        print(f"{path.name:40s} {seconds:6.1f} s", flush=True)


if __name__ == "__main__":
    main()
