"""`python -m bench.fleet.profiled_worker OUT.prof <python -m placement's arguments>`: a placement
worker under cProfile, for bench/fleet_replay.py --profile.

SIGUSR1 writes the profile so far to OUT.prof (and stops profiling). Why not `python -m cProfile`:
that writes only when the program returns, and a worker stopped while busy may end in
`os._exit` (thaw_core/process.py: a stop that outlasts its grace is cut short), writing nothing.
"""

import cProfile
import signal
import sys

from placement.__main__ import main as placement_main


def main() -> None:
    out, sys.argv = sys.argv[1], ["python -m placement", *sys.argv[2:]]
    profiler = cProfile.Profile()
    signal.signal(signal.SIGUSR1, lambda *_: profiler.dump_stats(out))
    profiler.enable()
    placement_main()


if __name__ == "__main__":
    main()
