"""`python -m edgeproxy.bench`: `edge-proxy bench`, with `--against real` accepted.

Until the CLI's own check (`edgeproxy.cli.run_bench`, which takes every
`--against` but `sim` for a kubeconfig path) lets `real` through, this runs
the same parser and the same `command.run`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from edgeproxy.bench.command import run
from edgeproxy.cli import build_parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(["bench", *(sys.argv[1:] if argv is None else argv)])
    if args.against not in ("sim", "real") and not Path(args.against).is_file():
        print(f"edge-proxy bench: --against {args.against}: no such kubeconfig", file=sys.stderr)
        return 2
    targets = tuple(t for t in args.targets.split(",") if t)
    return run(
        args.suites, args.against, args.out, quick=args.quick, runs=args.runs, targets=targets
    )


if __name__ == "__main__":
    sys.exit(main())
