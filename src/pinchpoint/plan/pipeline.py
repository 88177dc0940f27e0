"""Pipeline schedules: layers per chunk (even, uneven, or given), and the bubble.

Interleaved 1F1B (Megatron's virtual pipeline): each of the ``pp`` ranks holds ``vp`` chunks;
chunk c sits on rank c % pp. The bubble is (pp - 1) / vp of one micro-batch's time on the
slowest rank; 1F1B and GPipe (vp = 1) have (pp - 1) micro-batch times.
"""
from __future__ import annotations

from typing import Optional, Sequence

from pinchpoint.errors import ConfigError


def layers_per_chunk(n_layers: int, pp: int, vp: int = 1, embedding_as_layer: bool = False,
                     loss_as_layer: bool = False,
                     given: Optional[Sequence[int]] = None) -> list[int]:
    """Transformer layers in each of the pp x vp chunks, in schedule order. With the embedding
    and/or loss counted as a layer, chunk 0 / the last chunk hold one layer fewer, so 126 layers
    + 2 split as 64 chunks of 2 units for PP8 x VP8. Remainders go to the first chunks."""
    chunks = pp * vp
    if given is not None:
        given = [int(x) for x in given]
        if len(given) != chunks or sum(given) != n_layers or min(given) < 0:
            raise ConfigError("plan.layers_per_chunk", given,
                              f"{chunks} non-negative counts (pp x virtual_stages) summing to "
                              f"n_layers={n_layers}")
        return given
    units = n_layers + int(embedding_as_layer) + int(loss_as_layer)
    if units < chunks:
        raise ConfigError("parallel.pp", pp, f"at most {units // max(vp, 1)} stages: "
                          f"pp x virtual_stages = {chunks} chunks for {n_layers} layers")
    base, extra = divmod(units, chunks)
    counts = [base + (1 if i < extra else 0) for i in range(chunks)]
    counts[0] -= int(embedding_as_layer)
    counts[-1] -= int(loss_as_layer)
    if min(counts) < 0:
        raise ConfigError("parallel.pp", pp, "fewer stages (a chunk would hold no layer)")
    return counts


def layers_per_rank(chunks: Sequence[int], pp: int) -> list[int]:
    per = [0] * pp
    for c, n in enumerate(chunks):
        per[c % pp] += n
    return per


def bubble_time(per_micro_batch_s: float, pp: int, vp: int) -> float:
    """Idle time of the slowest rank per step: (pp - 1) / vp micro-batch times."""
    return (pp - 1) / vp * per_micro_batch_s if pp > 1 else 0.0


def check_interleaving(micro_batches: int, pp: int, vp: int) -> None:
    """Megatron's interleaved schedule needs the micro-batch count to be a multiple of pp."""
    if vp > 1 and micro_batches % pp:
        raise ConfigError("plan.virtual_stages", vp,
                          f"1 unless micro-batches per step ({micro_batches}) are a multiple of "
                          f"parallel.pp={pp} (interleaved 1F1B)")
