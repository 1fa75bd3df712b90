"""Reading a large set a slice per round: which cached entries are due to be read again."""


class Rotation:
    """Hands out the entries of a list, `per_round` a round at most, in turn: each entry comes
    round again within ceil(len / per_round) rounds of a list that stays the same. The list may
    change between rounds (entries come and go); the turn goes on from the same position."""

    def __init__(self, per_round: int):
        self.per_round = per_round
        self._next = 0

    def due(self, entries: list[str], taken: int = 0) -> list[str]:
        """The entries whose turn it is, when `taken` of this round's reads went elsewhere."""
        take = min(len(entries), max(self.per_round - taken, 0))
        if take == 0:
            return []
        start = self._next % len(entries)
        self._next = start + take
        return (entries[start:] + entries[:start])[:take]
