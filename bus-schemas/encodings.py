"""Encodings shared through the store and on disk, each with its one writer and parser."""


def gpu_list(indices: tuple[int, ...] | list[int]) -> str:
    """A node's GPU indices as stored in a pod's and a reservation's `gpus` field and a
    snapshot manifest's `gpu_indices`: "0,1"; "" for none."""
    return ",".join(str(i) for i in indices)


def gpu_indices(field: str) -> tuple[int, ...]:
    """The indices `gpu_list` wrote. Raises ValueError on anything else."""
    return tuple(int(x) for x in field.split(",") if x.strip())
