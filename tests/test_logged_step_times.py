"""benchmarks/logged_step_times.py reads a published result log's step time the two ways the
submissions log it (lines as MLPerf's mllog writes them, rank prefix and all)."""
from __future__ import annotations

import json

import pytest
from conftest import load_script


@pytest.fixture(scope="module")
def logged():
    return load_script("benchmarks/logged_step_times.py", "logged_step_times")


def _line(key, value, t_ms, rank=None, **meta):
    record = {"namespace": "", "time_ms": t_ms, "event_type": "POINT_IN_TIME", "key": key,
              "value": value, "metadata": {"file": "x.py", "lineno": 1, **meta}}
    return f"{'' if rank is None else f'{rank}: '}:::MLLOG {json.dumps(record)}"


def test_throughput_gives_global_batch_over_its_median(logged):
    lines = ["some stdout", _line("global_batch_size", 8, 0),
             _line("tracked_stats", {"throughput": 5.0, "train_step_time": 1.6}, 10, step=0),
             _line("tracked_stats", {"throughput": 4.0}, 20, step=1),
             _line("tracked_stats", {"throughput": 6.0}, 30, step=2),
             _line("tracked_stats", {"validation_throughput": 99.0}, 40, step=3)]
    assert logged.step_seconds(lines) == (pytest.approx(8 / 5.0), "throughput")


def test_loss_timestamps_give_seconds_per_sample_times_the_batch(logged):
    """Loss lines every 10 steps of 8 samples, 12.9 s apart, one slower interval (an eval
    between them would not be: evaluations sit between blocks): the median is 1.29 s."""
    lines = [_line("global_batch_size", 8, 0, rank=0)]
    t = 1_000_000
    for i, gap in enumerate([12_900, 12_900, 30_000, 12_900]):
        t += gap
        lines.append(_line("tracked_stats", {"train_loss": 1.5}, t, rank=0,
                           samples_count=80 * (i + 1), step=10 * (i + 1)))
    step, how = logged.step_seconds(lines)
    assert step == pytest.approx(1.29) and how == "train_loss timestamps"


def test_a_log_without_either_says_why(logged):
    assert logged.step_seconds([_line("tracked_stats", {"train_loss": 1.0}, 5)]) == (
        None, "no global_batch_size")
    assert logged.step_seconds([_line("global_batch_size", 8, 0), "not json :::MLLOG {"])[0] \
        is None


# Lines as NeMo prints its configuration at start (from a v5.1 llama2_70b_lora result_0.txt:
# the composed YAML, then Megatron's TransformerConfig repr); the data config below repeats
# micro_batch_size, and the first one is the model's.
NEMO_DUMP = ["0:   tensor_model_parallel_size: 2",
             "0:   pipeline_model_parallel_size: 1",
             "0:   context_parallel_size: 1",
             "0:   micro_batch_size: 1",
             "0:   fp8_dot_product_attention: 1",
             "0:   activation_func_fp8_input_store: 1",
             "0:   external_cuda_graph: false",
             "0:   enable_cuda_graph: false",
             "0:       micro_batch_size: 4",
             "0: Llama2Config70B(tensor_model_parallel_size=2,",
             "0:                 context_parallel_size=1,"]


def test_the_layout_that_ran_is_read_from_nemos_config_dump(logged):
    lines = [_line("global_batch_size", 8, 0, rank=0),
             _line("gradient_accumulation_steps", 2, 1, rank=0), *NEMO_DUMP]
    got = logged.logged_layout(lines)
    assert {k: v for k, (v, _) in got.items()} == {
        "global_batch": 8, "accumulation": 2, "tp": 2, "cp": 1, "mbs": 1,
        "fp8_attention": 1, "fp8_activation_store": 1, "cuda_graph": False}
    assert got["tp"][1] == 3 and got["mbs"][1] == 6       # 1-based line numbers, first match


def test_a_row_that_read_micro_batches_as_the_micro_batch_is_named(logged):
    """Dell's 8 x H200 row as first read: TP1 and MINIBS=2 taken for the micro-batch. The log
    says TP2, micro-batch 1, two micro-batches a step."""
    row = {"layout": {"tp": 1, "pp": 1, "cp": 1, "mbs": 2}, "global_batch": 8, "gpus": 8,
           "inputs": {"fp8_attention": "true"}}
    lines = [_line("gradient_accumulation_steps", 2, 1), *NEMO_DUMP]
    assert logged.layout_differences(row, logged.logged_layout(lines)) == [
        "tp 1->2", "mbs 2->1", "accumulation 0->2"]
    row["layout"] = {"tp": 2, "pp": 1, "cp": 1, "mbs": 1}
    assert logged.layout_differences(row, logged.logged_layout(lines)) == []
