"""The live pods housekeeping works from, kept across rounds and read a slice at a time.

Reading every live pod's record every round cost a worker most of its time with a few thousand
pods (bench/fleet_replay.py): each record is a hash of ~17 fields, parsed in Python. So each
round reads the set of live pod ids (a pod that ended or appeared is seen at once), the records
of pods new to the cache, and `per_round` of the others in turn; with no more than `per_round`
pods every record is read every round, as before.

What a record read up to ceil(pods / per_round) rounds ago can cost, and why it is safe: each
step housekeeping takes on a pod is a compare-and-set in the store that checks the pod's state
itself (sweep, begin_drain, retire, release), and whether a pod is lost is judged from the
heartbeats this worker hears, not from the record; a stale record can only make a step wait
for the pod's next turn.
"""

from thaw_core.store.pods import PodRecord, Pods

from placement.rotation import Rotation

PODS_PER_ROUND = 500


class PodCache:
    def __init__(self, pods: Pods, per_round: int = PODS_PER_ROUND):
        self._pods = pods
        self._turns = Rotation(per_round)
        self._records: dict[str, PodRecord] = {}
        self.read = 0  # records read so far (what a round costs, for tests)

    async def current(self) -> list[PodRecord]:
        """Every live pod, in id order: new ones read now, the rest as of their last turn."""
        ids = await self._pods.live_ids()
        live = set(ids)
        for gone in set(self._records) - live:
            del self._records[gone]
        fresh = [p for p in ids if p not in self._records]
        due = self._turns.due([p for p in ids if p in self._records], len(fresh))
        wanted = fresh + due
        found = {r.pod: r for r in await self._pods.get_many(wanted)}
        self.read += len(wanted)
        for pod in wanted:
            if pod in found:
                self._records[pod] = found[pod]
            else:  # ended between the two reads
                self._records.pop(pod, None)
        return [self._records[p] for p in ids if p in self._records]

