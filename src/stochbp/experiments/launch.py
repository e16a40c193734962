"""Several hosts: ``python -m stochbp.experiments.launch [OPTIONS] -- run EXPERIMENT ...``

Starts JAX's multi-process runtime with ``jax.distributed.initialize`` and then runs the
``stochbp`` command line given after ``--`` (the same on every host). The mesh of
``stochbp run`` then spans the devices of every process (``--devices`` defaults to all
of them), each process computes its slice of every training batch, and process 0 alone
writes results and checkpoints; ``--out`` must be a folder that every host sees (a
shared file system) for ``--resume`` to continue on every host from the same
checkpoint.

Options (all optional: without them ``jax.distributed.initialize`` finds them itself
on SLURM, Open MPI and Cloud TPU):

    --coordinator HOST:PORT   address of process 0's coordination service
    --num-processes N         number of processes (hosts)
    --process-id I            this process's index, 0 .. N - 1
"""
from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        print("usage: python -m stochbp.experiments.launch [--coordinator HOST:PORT "
              "--num-processes N --process-id I] -- run EXPERIMENT [options]",
              file=sys.stderr)
        return 2
    cut = argv.index("--")
    ap = argparse.ArgumentParser(prog="python -m stochbp.experiments.launch")
    ap.add_argument("--coordinator")
    ap.add_argument("--num-processes", type=int)
    ap.add_argument("--process-id", type=int)
    args = ap.parse_args(argv[:cut])
    import jax
    jax.distributed.initialize(coordinator_address=args.coordinator,
                               num_processes=args.num_processes,
                               process_id=args.process_id)
    from stochbp import cli
    return cli.main(argv[cut + 1:])


if __name__ == "__main__":
    sys.exit(main())
