"""The function specs housekeeping works from, kept across rounds and read a slice at a time.

Housekeeping needs every deployed function's spec each round (min_pods, idle timeouts, which
pods belong to a deleted function). Reading and decoding every spec every round cost a worker
most of its time on a large deployment (10,771 functions: bench/fleet_replay.py), and so did
even the set of their names. So each round reads `per_round` specs in turn, and the set of
names once per turn through them: a function deployed, redeployed or deleted is seen within
ceil(functions / per_round) rounds. The exception: a function with live pods that the cache does
not hold (deployed since, its pods placed for lease requests) is read at once, so that its pods
are never taken for a deleted function's. With no more than `per_round` functions the names and
every spec are read every round, as before.

Lease requests never use this cache: they read their function's spec afresh.
"""

from collections.abc import Iterable

from bus_schemas.functions import FunctionSpec
from thaw_core.store.functions import Functions

from placement.rotation import Rotation

SPECS_PER_ROUND = 1000


class SpecCache:
    def __init__(self, functions: Functions, per_round: int = SPECS_PER_ROUND):
        self._functions = functions
        self._turns = Rotation(per_round)
        self._specs: dict[str, FunctionSpec] = {}
        self._names: list[str] = []  # as last read
        self._reads_left = 0  # re-reads left before the names are read again

    async def current(self, with_pods: Iterable[str] = ()) -> dict[str, FunctionSpec]:
        """Name -> spec of every deployed function as of its last turn (module docstring);
        `with_pods`: the functions that have live pods."""
        fresh = sorted({fn for fn in with_pods if fn not in self._specs})
        if self._reads_left <= 0:
            self._names = await self._functions.names()
            deployed = set(self._names)
            for gone in set(self._specs) - deployed:
                del self._specs[gone]
            fresh = sorted(set(fresh) | {n for n in self._names if n not in self._specs})
            self._reads_left = len(self._names) - len(fresh)
        due = self._turns.due([n for n in self._names if n in self._specs], len(fresh))
        self._reads_left -= len(due)
        for name, spec in (await self._functions.get_many(fresh + due)).items():
            if spec is None:  # deleted between the two reads
                self._specs.pop(name, None)
            else:
                self._specs[name] = spec
        return dict(self._specs)
