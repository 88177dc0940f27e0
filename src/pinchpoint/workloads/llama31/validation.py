"""Pre-launch checks for the Llama workloads on the typed run config: each error names the
field and what is allowed."""
from __future__ import annotations

from omegaconf import OmegaConf

from pinchpoint.errors import one_of, require
from pinchpoint.parallel.dims import ParallelDims
from pinchpoint.workloads.common import validation as llm


def validate(run) -> None:
    m = run.model
    one_of(m.scale, "model.scale", ["proxy", "full", "smoke"])
    s, a = f"model.{m.scale}", getattr(m, m.scale)
    llm.validate_attention_shape(s, a)
    dims = ParallelDims.from_config(run.parallel)
    llm.validate_recipe(run, dims)
    require(dims.ep, "parallel.ep", lambda v: v == 1,
            f"1 ({m.name} is a dense model: it has no experts to shard; expert parallelism is "
            "for the MoE models gpt_oss_20b and deepseek_v3_671b)")
    require(dims.tp, "parallel.tp", lambda v: a.n_heads % v == 0 and a.n_kv_heads % v == 0,
            f"a divisor of n_heads={a.n_heads} and n_kv_heads={a.n_kv_heads} ({s}): each rank "
            "takes whole heads")
    require(dims.tp, "parallel.tp", lambda v: a.ffn_dim % v == 0 and a.vocab_size % v == 0,
            f"a divisor of ffn_dim={a.ffn_dim} and vocab_size={a.vocab_size} ({s})")
    require(dims.pp, "parallel.pp", lambda v: v <= a.n_layers,
            f"at most n_layers={a.n_layers} ({s}): every stage holds at least one layer")
    if not run.plan_only:  # plan_only prints the plan (with fits: false) instead of refusing
        from pinchpoint.workloads.llama31.plan import check_fits_gpu, check_fits_host
        cfg = OmegaConf.structured(run)
        # A full-scale run targets GPUs (maybe from a CPU login node): check the GPU config;
        # a proxy runs here: check this host's free memory.
        if m.scale == "full" or run.train.device == "cuda":
            check_fits_gpu(cfg)
        else:
            check_fits_host(cfg)
