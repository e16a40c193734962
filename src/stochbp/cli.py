"""The `stochbp` command line."""
from __future__ import annotations

import argparse
import sys


def _demo(args) -> int:
    import jax
    jax.config.update("jax_enable_x64", True)
    from stochbp import demo
    demo.run(num_draws=args.draws, num_samples=args.samples, seed=args.seed)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stochbp", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="every estimator beside the exact gradient, for "
                                       "every distribution")
    demo.add_argument("--draws", type=int, default=400, help="gradient estimates per row")
    demo.add_argument("--samples", type=int, default=4, help="samples per estimate")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
