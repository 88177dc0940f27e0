"""Bad Llama configs fail before launch with the field, the value and what is allowed."""
from __future__ import annotations

import pytest

from conftest import compose
from pinchpoint.errors import ConfigError
from pinchpoint.runner.validation import validate


@pytest.mark.parametrize("overrides,field,says", [
    (["parallel=tp2", "model.proxy.n_heads=6", "model.proxy.n_kv_heads=3",
      "model.proxy.dim=96"], "parallel.tp", "divisor of n_heads=6"),
    (["parallel=pp2", "model.proxy.n_layers=1"], "parallel.pp", "at most n_layers=1"),
    (["parallel=ep2"], "parallel.ep", "a dense model"),
    (["model.proxy.micro_batch_size=3"], "model.proxy.global_batch_size",
     "multiple of micro_batch_size x data-parallel degree = 3 x 1"),
    (["parallel=fsdp2", "model.proxy.micro_batch_size=16"], "model.proxy.global_batch_size",
     "16 x 2"),
    (["model.proxy.seq_len=9000"], "model.proxy.seq_len", "max_seq_len=8192"),
    (["model.proxy.n_kv_heads=3"], "model.proxy.n_kv_heads", "divisor of n_heads=8"),
    (["parallel.world_size=3", "parallel.dp_shard=2"], "parallel.world_size",
     "product of the degrees"),
    (["model.pipeline_schedule=zb"], "model.pipeline_schedule", "gpipe, 1f1b"),
    (["model.proxy.eval_samples=250"], "model.proxy.eval_samples", "multiple of 8"),
    (["dataset=c4", "dataset.path=/nonexistent"], "dataset.path", "PINCHPOINT_C4_PATH"),
    (["dataset=synthetic_criteo"], "dataset.name", "Megatron text dataset"),
])
def test_bad_inputs_name_the_field(out, overrides, field, says):
    with pytest.raises(ConfigError) as err:
        validate(compose(["model=llama31_8b", *overrides], out))
    assert err.value.field == field
    assert says in str(err.value)


def test_model_config_selects_its_dataset(out):
    assert compose(["model=llama31_8b"], out).dataset.name == "synthetic_c4"
    assert compose(["model=llama31_405b"], out).dataset.name == "synthetic_c4"
    assert compose(["model=llama31_8b", "dataset=c4"], out).dataset.name == "c4"
    assert compose([], out).dataset.name == "synthetic_criteo"      # DLRM keeps its default
    validate(compose(["model=llama31_8b"], out))
