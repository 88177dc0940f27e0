"""The mixture-of-experts layer shared by GPT-OSS 20B and DeepSeek V3 (after torchtitan's
models/common/moe.py and the Hugging Face modeling files; written here, not copied).

A token's hidden state goes to a router, which picks ``top_k`` of ``num_experts`` feed-forward
experts and weights their outputs:

- ``score_func="softmax"`` (GPT-OSS; Megatron with ``moe_router_pre_softmax=false``): top-k of
  the router logits, then a softmax over those k logits.
- ``score_func="sigmoid"`` (DeepSeek V3): sigmoid scores; the *choice* uses scores + an
  ``expert_bias`` that no gradient touches (aux-loss-free balancing: moved by the load after
  each step) and is limited to the ``top_groups`` best of ``num_groups`` expert groups (a
  group's score is the sum of its two best experts); the *weights* are the chosen raw scores,
  renormalised to sum to 1 and multiplied by ``route_scale``.

The experts run as one batched matmul over all experts (``torch._grouped_mm`` on GPU, a padded
``torch.bmm`` elsewhere), never a Python loop over experts. An optional capacity factor drops the
lowest-weight tokens beyond ``ceil(capacity_factor x tokens x top_k / experts)`` per expert
(Megatron's "probs" drop policy); off (None) by default, as in both references.

Every forward leaves ``router_stats`` (tokens per expert, dropped pairs, router entropy,
balancing loss) for the workload's measurements, and ``aux_loss`` (the balancing loss); with
``aux_loss_scale`` set, backward also trains the router on it (coefficient / micro-batches)
without adding it to the reported language-model loss. With expert parallelism
(pinchpoint.parallel.expert) this layer holds only its rank's experts and the dispatcher moves
tokens to them with all-to-all; the arithmetic is the same. Under tensor parallelism with sequence
parallel the layer runs on each rank's shard of the sequence (``sequence_shards``): the router
statistics and the balancing loss are summed over the shards, so they describe whole sequences.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from pinchpoint.workloads.common.decoder import FeedForward, recomputing


@dataclass
class MoEArgs:
    dim: int
    expert_dim: int                  # hidden size of one expert's feed-forward
    num_experts: int
    top_k: int
    score_func: str = "softmax"      # softmax (GPT-OSS) | sigmoid (DeepSeek V3)
    num_groups: int = 1              # group-limited routing (DeepSeek V3: 8 groups ...)
    top_groups: int = 1              # ... of which a token may use 4
    route_scale: float = 1.0         # DeepSeek V3: 2.5
    expert_bias: bool = False        # DeepSeek V3's selection bias (aux-loss-free balancing)
    router_bias: bool = False        # GPT-OSS: the router Linear has a bias
    expert_biases: bool = False      # GPT-OSS: experts' projections have biases
    activation: str = "swiglu"       # swiglu | gpt_oss (clamped SwiGLU, alpha 1.702, up + 1)
    shared_experts: int = 0          # DeepSeek V3: 1 always-on expert (hidden = n x expert_dim)
    capacity_factor: Optional[float] = None   # None: no token dropping
    balance_loss: str = "switch"     # switch (over the batch) | sequence (DeepSeek V3)


def swiglu(x: torch.Tensor, activation: str) -> torch.Tensor:
    """x (..., 2 x hidden) = [gate | up] -> (..., hidden)."""
    gate, up = x.chunk(2, dim=-1)
    if activation == "gpt_oss":
        # GPT-OSS clamps both halves to +-7, uses gate*sigmoid(1.702 gate) and adds 1 to up.
        gate = gate.clamp(max=7.0)
        up = up.clamp(-7.0, 7.0)
        return (up + 1) * gate * torch.sigmoid(1.702 * gate)
    return F.silu(gate) * up


class Router(nn.Module):
    def __init__(self, a: MoEArgs):
        super().__init__()
        self.args = a
        self.gate = nn.Linear(a.dim, a.num_experts, bias=a.router_bias)
        if a.expert_bias:
            # A buffer, not a parameter: it is moved by the load rule, never by gradients.
            self.register_buffer("expert_bias", torch.zeros(a.num_experts))
        else:
            self.expert_bias = None

    def forward(self, x: torch.Tensor):
        """x (tokens, dim) -> weights (tokens, k), expert ids (tokens, k), and the router's
        full distribution (tokens, experts) for entropy and the balancing loss."""
        a = self.args
        logits = self.gate(x).float()      # routing in fp32, as both references do
        if a.score_func == "softmax":
            top_logits, experts = logits.topk(a.top_k, dim=-1)
            weights = top_logits.softmax(dim=-1)
            probs = logits.softmax(dim=-1)
        else:
            scores = logits.sigmoid()
            choice = scores if self.expert_bias is None else scores + self.expert_bias
            if a.num_groups > 1:
                choice = _limit_to_top_groups(choice, a.num_groups, a.top_groups)
            experts = choice.topk(a.top_k, dim=-1).indices
            weights = scores.gather(-1, experts)
            if a.top_k > 1:
                weights = weights / (weights.sum(-1, keepdim=True) + 1e-20)
            probs = scores / (scores.sum(-1, keepdim=True) + 1e-20)
        return weights * a.route_scale, experts, probs


def _limit_to_top_groups(choice: torch.Tensor, groups: int, top_groups: int) -> torch.Tensor:
    """Mask every expert outside the token's ``top_groups`` best groups with -inf."""
    tokens, experts = choice.shape
    grouped = choice.view(tokens, groups, experts // groups)
    best_two = grouped.topk(min(2, experts // groups), dim=-1).values.sum(-1)  # (tokens, groups)
    keep = torch.zeros_like(best_two, dtype=torch.bool)
    keep.scatter_(1, best_two.topk(top_groups, dim=-1).indices, True)
    return grouped.masked_fill(~keep.unsqueeze(-1), float("-inf")).view(tokens, experts)


class GroupedExperts(nn.Module):
    """``num_experts`` SwiGLU experts stored as stacked weights (experts, in, out), so one
    batched matmul runs them all. Under expert parallelism the leading dimension holds only the
    local experts (``first_expert`` says where they start in the global numbering)."""

    def __init__(self, a: MoEArgs):
        super().__init__()
        self.activation = a.activation
        self.first_expert = 0
        e, d, h = a.num_experts, a.dim, a.expert_dim
        self.gate_up_proj = nn.Parameter(torch.empty(e, d, 2 * h))
        self.down_proj = nn.Parameter(torch.empty(e, h, d))
        if a.expert_biases:
            self.gate_up_bias = nn.Parameter(torch.zeros(e, 2 * h))
            self.down_bias = nn.Parameter(torch.zeros(e, d))
        else:
            self.gate_up_bias = self.down_bias = None

    @property
    def num_local(self) -> int:
        return self.gate_up_proj.shape[0]

    def forward(self, rows: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """rows (n, dim) sorted by local expert, ``counts[e]`` rows each -> (n, dim)."""
        if _grouped_mm_usable(rows, self.down_proj.shape[1]):
            return self._grouped(rows.to(torch.bfloat16), counts)
        return self._padded(rows, counts)

    def _grouped(self, rows: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """One grouped GEMM per projection over contiguous row blocks (``offs`` = block ends),
        everything in the rows' dtype (bf16)."""
        offsets = counts.cumsum(0).to(torch.int32)
        dtype, n = rows.dtype, len(rows)
        h = torch._grouped_mm(rows, self.gate_up_proj.to(dtype), offs=offsets)
        if self.gate_up_bias is not None:
            h = h + self.gate_up_bias.to(dtype).repeat_interleave(counts, dim=0, output_size=n)
        out = torch._grouped_mm(swiglu(h, self.activation).to(dtype), self.down_proj.to(dtype),
                                offs=offsets)
        if self.down_bias is not None:
            out = out + self.down_bias.to(dtype).repeat_interleave(counts, dim=0, output_size=n)
        return out

    def _padded(self, rows: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """Scatter rows into an (experts, most rows, dim) block, bmm, gather back: padding
        costs compute under imbalance but keeps it one kernel per projection."""
        n, e = len(rows), self.num_local
        expert_of_row = torch.repeat_interleave(torch.arange(e, device=rows.device), counts,
                                                output_size=n)
        starts = counts.cumsum(0) - counts
        slot = torch.arange(n, device=rows.device) - starts[expert_of_row]
        width = int(counts.max()) if n else 0
        block = rows.new_zeros(e, width, rows.shape[-1])
        block = block.index_put((expert_of_row, slot), rows)
        h = torch.bmm(block, self.gate_up_proj.to(rows.dtype))
        if self.gate_up_bias is not None:
            h = h + self.gate_up_bias.unsqueeze(1)
        out = torch.bmm(swiglu(h, self.activation), self.down_proj.to(rows.dtype))
        if self.down_bias is not None:
            out = out + self.down_bias.unsqueeze(1)
        return out[expert_of_row, slot]


def _grouped_mm_usable(rows: torch.Tensor, expert_dim: int) -> bool:
    """torch._grouped_mm has CUDA kernels (bf16, Hopper and later) with a backward; on CPU only
    a forward exists, so CPU training takes the padded bmm path. On GPU the experts run in bf16
    when the rows are bf16 or the step runs under bf16 autocast; the kernels want row strides
    in multiples of 16 bytes (widths divisible by 8)."""
    if not (rows.is_cuda and hasattr(torch, "_grouped_mm")):
        return False
    if rows.shape[-1] % 8 or expert_dim % 8:
        return False
    if torch.cuda.get_device_capability(rows.device)[0] < 9:
        return False
    return rows.dtype == torch.bfloat16 or (torch.is_autocast_enabled("cuda") and
                                            torch.get_autocast_dtype("cuda") == torch.bfloat16)


def capacity(tokens: int, a: MoEArgs) -> Optional[int]:
    if a.capacity_factor is None:
        return None
    return math.ceil(a.capacity_factor * tokens * a.top_k / a.num_experts)


def sort_pairs(weights: torch.Tensor, experts: torch.Tensor, num_experts: int,
               cap: Optional[int]):
    """Flatten the (token, choice) pairs, order them by expert and apply the capacity.

    Returns (token of each kept pair, its weight, its expert, number of dropped pairs). With a
    capacity, pairs are ordered by descending weight within an expert first, so the ones beyond
    capacity are the least weighted (Megatron's "probs" drop policy)."""
    k = experts.shape[1]
    flat_expert, flat_weight = experts.reshape(-1), weights.reshape(-1)
    if cap is None:
        order = torch.argsort(flat_expert, stable=True)
    else:
        by_weight = torch.argsort(flat_weight, descending=True, stable=True)
        order = by_weight[torch.argsort(flat_expert[by_weight], stable=True)]
    sorted_expert = flat_expert[order]
    dropped = torch.zeros((), dtype=torch.long, device=experts.device)
    if cap is not None:
        counts = torch.bincount(sorted_expert, minlength=num_experts)
        starts = counts.cumsum(0) - counts
        rank_in_expert = torch.arange(len(order), device=order.device) - starts[sorted_expert]
        keep = rank_in_expert < cap
        dropped = (~keep).sum()
        order, sorted_expert = order[keep], sorted_expert[keep]
    return order // k, flat_weight[order], sorted_expert, dropped


@dataclass
class SequenceShards:
    """The ranks that each hold one equal, contiguous shard of every sequence (the tensor-parallel
    group with sequence parallel). A MoE layer routes only its shard's tokens, so no token is
    computed twice; what needs whole sequences (the balancing loss's loads, router statistics)
    is summed over the shards with ``reduce`` (in place, over all ``size`` ranks)."""
    size: int
    reduce: Callable[[torch.Tensor], torch.Tensor]


class MoE(nn.Module):
    """Router + grouped routed experts (+ shared experts). forward((batch, seq, dim))."""

    def __init__(self, a: MoEArgs):
        super().__init__()
        self.args = a
        self.router = Router(a)
        self.experts = GroupedExperts(a)
        self.shared_experts = FeedForward(a.dim, a.shared_experts * a.expert_dim) \
            if a.shared_experts else None
        self.expert_parallel = None     # set by pinchpoint.parallel.expert.apply_expert_parallel
        self.sequence_shards: Optional[SequenceShards] = None    # set by a tensor-parallel plan
        self.aux_loss: Optional[torch.Tensor] = None
        # Gradient weight of the balancing loss (coefficient / micro-batches per step), set by
        # the workload; 0 leaves the loss out of training (GPT-OSS's reference).
        self.aux_loss_scale = 0.0
        self.router_stats: dict[str, torch.Tensor] = {}
        # Tokens per expert over the training micro-batches since the last reset (for the
        # expert-bias rule and the per-step statistics).
        self.register_buffer("step_tokens_per_expert", torch.zeros(a.num_experts),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, dim = x.shape
        flat = x.reshape(-1, dim)
        weights, experts, probs = self.router(flat)
        token, weight, expert, dropped = sort_pairs(weights, experts, self.args.num_experts,
                                                    capacity(len(flat), self.args))
        if self.expert_parallel is not None:
            y = self.expert_parallel.run(flat, token, expert, self.experts)
        else:
            counts = torch.bincount(expert, minlength=self.args.num_experts)
            y = self.experts(flat[token], counts)
        routed = combine(flat, token, weight, y)
        out = routed if self.shared_experts is None else routed + self.shared_experts(flat)
        self._record(experts, probs, dropped, batch)
        if self.training and self.aux_loss_scale:
            out = _AuxLossGradient.apply(out, self.aux_loss, self.aux_loss_scale)
        return out.view(batch, seq, dim)

    def _record(self, experts, probs, dropped, batch) -> None:
        """Balancing loss and router statistics of this forward. With sequence shards, one
        all-reduce (per layer and micro-batch) sums the loads, probability sums, entropy and
        drops over them; ``aux_loss`` is then this rank's part of the whole-sequence loss."""
        a, shards = self.args, self.sequence_shards
        groups = batch if a.balance_loss == "sequence" else 1
        prob_sums = _group_sums(probs, groups)     # keeps its gradient: it trains the router
        with torch.no_grad():
            picks = _group_sums(_chosen(experts, a.num_experts), groups)
            entropy = -(probs * probs.clamp_min(1e-20).log()).sum()
            packed = torch.cat([picks.flatten(), prob_sums.detach().flatten(),
                                entropy.view(1), dropped.view(1).to(picks.dtype)])
            if shards is not None:
                shards.reduce(packed)
            picks, whole_sums, (entropy, dropped) = packed.split(
                [picks.numel(), picks.numel(), 2])
            picks, whole_sums = picks.view(groups, -1), whole_sums.view(groups, -1)
        size = shards.size if shards is not None else 1
        tokens = len(probs) // groups * size            # tokens per group, all shards
        counts = picks.sum(0)
        if self.training and not recomputing():   # a recomputed forward is not more tokens
            self.step_tokens_per_expert += counts
        self.aux_loss = _balance(picks, prob_sums, tokens, a)
        self.router_stats = {"tokens_per_expert": counts.round().long(),
                             "dropped_pairs": dropped.round().long(),
                             "pairs": torch.tensor(experts.numel() * size),
                             "entropy": entropy / (len(probs) * size),
                             "balancing_loss": _balance(picks, whole_sums, tokens, a)}


class _AuxLossGradient(torch.autograd.Function):
    """Identity on the layer output whose backward also sends ``scale`` into the balancing
    loss (Megatron's MoEAuxLossAutoScaler): the loss trains the router without being added to
    the reported language-model loss, and works inside pipeline stages."""

    @staticmethod
    def forward(ctx, out, aux, scale: float):
        ctx.save_for_backward(aux)
        ctx.scale = scale
        return out.view_as(out)

    @staticmethod
    def backward(ctx, grad):
        (aux,) = ctx.saved_tensors
        return grad, torch.full_like(aux, ctx.scale), None


def balancing_loss(probs: torch.Tensor, experts: torch.Tensor, a: MoEArgs, batch: int,
                   seq: int) -> torch.Tensor:
    """The load-balancing loss without its coefficient: E x sum_i f_i P_i, where f_i is the
    fraction of routed (token, choice) pairs that chose expert i and P_i the mean router
    probability of i. ``switch`` (Megatron's aux_loss) averages over all tokens of the micro-
    batch; ``sequence`` (DeepSeek V3's complementary sequence-wise loss, Megatron's seq_aux_loss)
    computes it per sequence with normalised sigmoid scores and averages the sequences."""
    groups = batch if a.balance_loss == "sequence" else 1
    picks = _group_sums(_chosen(experts, a.num_experts), groups)
    return _balance(picks, _group_sums(probs, groups), len(probs) // groups, a)


def _chosen(experts: torch.Tensor, num_experts: int) -> torch.Tensor:
    """(tokens, k) expert ids -> (tokens, experts) 0/1 choices."""
    out = torch.zeros(len(experts), num_experts, device=experts.device)
    return out.scatter_(1, experts, 1.0)


def _group_sums(per_token: torch.Tensor, groups: int) -> torch.Tensor:
    """(tokens, experts) -> (groups, experts): sums over each group's consecutive tokens."""
    return per_token.view(groups, -1, per_token.shape[-1]).sum(1)


def _balance(picks: torch.Tensor, prob_sums: torch.Tensor, tokens: int,
             a: MoEArgs) -> torch.Tensor:
    """E x sum_i f_i P_i per group, averaged over groups, from the pairs per expert (``picks``)
    and probability sums of ``tokens`` tokens: f_i = picks_i E / (k T), P_i = prob_sums_i / T.
    Linear in ``prob_sums``: with the loads summed over sequence shards and one shard's
    probability sums, it is that shard's part of the whole loss, with exactly the whole loss's
    gradient for the shard's tokens (the parts add up to the loss; nothing crosses ranks in
    backward)."""
    e, k = a.num_experts, a.top_k
    return (picks * prob_sums).sum(-1).mean() * (e / (k * tokens * tokens))


def combine(flat: torch.Tensor, token: torch.Tensor, weight: torch.Tensor,
            y: torch.Tensor) -> torch.Tensor:
    """Weight each expert output by its routing weight and sum a token's k outputs."""
    # in at least fp32 (bf16 expert outputs under autocast), added in the residual's dtype
    wide = torch.promote_types(y.dtype, torch.float32)
    weighted = (y.to(wide) * weight.unsqueeze(-1)).to(flat.dtype)
    return torch.zeros_like(flat).index_add_(0, token, weighted)


def moe_layers(model: nn.Module) -> list[MoE]:
    return [m for m in model.modules() if isinstance(m, MoE)]


def aux_loss(model: nn.Module) -> torch.Tensor:
    """Sum of the last forward's balancing losses over the model's MoE layers."""
    losses = [m.aux_loss for m in moe_layers(model) if m.aux_loss is not None]
    return torch.stack(losses).sum() if losses else torch.zeros(())


@torch.no_grad()
def update_expert_bias(model: nn.Module, rate: float, counts: list[torch.Tensor]) -> None:
    """DeepSeek V3's aux-loss-free balancing: after a step, raise the selection bias of
    under-loaded experts and lower it for over-loaded ones by ``rate`` (sign rule). ``counts``
    are each MoE layer's tokens per expert for the step, summed over data-parallel ranks."""
    for layer, load in zip(moe_layers(model), counts):
        if layer.router.expert_bias is not None:
            load = load.float()
            layer.router.expert_bias.add_(rate * torch.sign(load.mean() - load))


def step_counts(model: nn.Module) -> torch.Tensor:
    """(MoE layers, experts) tokens per expert over this step's training micro-batches."""
    layers = moe_layers(model)
    return torch.stack([m.step_tokens_per_expert for m in layers]) if layers else \
        torch.zeros(0, 0)


def reset_step_counts(model: nn.Module) -> None:
    for m in moe_layers(model):
        m.step_tokens_per_expert.zero_()


def router_summary(model: nn.Module, counts: Optional[torch.Tensor] = None) -> dict[str, float]:
    """Router statistics over all MoE layers for measurements: tokens per expert (``counts``,
    e.g. the step's counts summed over ranks; default the last forward's), load imbalance
    (max / mean per layer, averaged over layers), and from the last forward the dropped
    fraction, router entropy and balancing loss."""
    layers = [m for m in moe_layers(model) if m.router_stats]
    if not layers:
        return {}
    if counts is None:
        counts = torch.stack([m.router_stats["tokens_per_expert"] for m in layers])
    counts = counts.float()
    mean = counts.mean(1)
    pairs = sum(float(m.router_stats["pairs"]) for m in layers)
    dropped = sum(float(m.router_stats["dropped_pairs"]) for m in layers)
    return {"moe_tokens_per_expert_min": float(counts.min()),
            "moe_tokens_per_expert_mean": float(counts.mean()),
            "moe_tokens_per_expert_max": float(counts.max()),
            "moe_load_imbalance": float((counts.max(1).values / mean.clamp_min(1e-9)).mean()),
            "moe_dropped_fraction": dropped / max(pairs, 1.0),
            "moe_router_entropy": float(torch.stack(
                [m.router_stats["entropy"] for m in layers]).mean()),
            "moe_balancing_loss": float(torch.stack(
                [m.router_stats["balancing_loss"] for m in layers]).mean())}
