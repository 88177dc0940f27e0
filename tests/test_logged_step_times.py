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


def test_nemos_train_step_time_gives_its_median(logged):
    """NeMo's pretraining logs (Llama 3.1 8B, v5.1) carry the step's seconds themselves every
    LOG_EVERY_N_STEPS steps; a warmup record without it does not count."""
    lines = [_line("global_batch_size", 36, 0),
             _line("tracked_stats", {"warmup_time": 80.0}, 1),
             *(_line("tracked_stats", {"train_step_time": t, "reduced_train_loss": 7.0}, 2 + i,
                     step=31 + 32 * i, samples_count=1152 * (i + 1))
               for i, t in enumerate([0.1428, 0.1446, 0.1443, 0.9, 0.1457]))]
    assert logged.step_seconds(lines) == (pytest.approx(0.1446), "train_step_time")


# Lambda's GB300 Llama 3.1 8B log (v5.1, result_1.txt): the YAML's fp8 and fp4 switches, then
# Megatron's reprs, whose fp8='e4m3' and fp4=None do not count.
PRECISION_DUMP = [" 0:       context_parallel_size: 2",
                  " 0:       fp8: true",
                  " 0:       fp8_recipe: tensorwise",
                  " 0:       fp4: false",
                  " 0:       fp4_recipe: nvfp4",
                  " 0:         fp8_param_gather: true",
                  " 0:                 fp8='e4m3',",
                  " 0:                 fp4=None,"]


def test_the_gemm_precision_that_ran_is_read_from_the_yaml_switches(logged):
    got = logged.logged_layout(PRECISION_DUMP)
    assert (got["fp8"], got["fp4"], got["fp8_param_gather"]) == ((True, 2), (False, 4),
                                                                 (True, 6))
    assert logged.logged_precision(got) == "fp8"
    assert logged.logged_precision(logged.logged_layout([" 0:       fp4: true"])) == "fp4"
    assert logged.logged_precision(logged.logged_layout([" 0:       fp8: false"])) == "bf16"
    assert logged.logged_precision(logged.logged_layout(["0: Config(fp8='e4m3',"])) is None


def test_a_row_labelled_nvfp4_that_ran_fp8_is_named(logged):
    """Lambda's row as first read: NVFP4 (its config's name) with no FP8 parameter gather."""
    row = {"layout": {"tp": 1, "pp": 1, "cp": 2, "mbs": 1}, "global_batch": 36, "gpus": 72,
           "precision": "nvfp4", "inputs": {}}
    said = logged.logged_layout(PRECISION_DUMP)
    assert logged.layout_differences(row, said) == ["precision fp4->fp8"]
    row["precision"] = "fp8"
    assert logged.layout_differences(row, said) == ["fp8_param_gather False->True"]
    row["inputs"] = {"fp8_param_gather": "true"}
    assert logged.layout_differences(row, said) == []


def _repo_with(tmp_path, files: dict[str, str]):
    import subprocess
    for path, text in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "logs"], check=True)
    return tmp_path


def test_saved_steps_merge_into_the_calibrations_targets(logged, tmp_path):
    """--save writes each system's step with how, which log and which commit, keyed as
    planner_vs_published looks rows up, and keeps what other rounds saved before."""
    import json
    log = "\n".join([_line("global_batch_size", 36, 0),
                     *(_line("tracked_stats", {"train_step_time": 0.161}, i) for i in (1, 2))])
    repo = _repo_with(tmp_path / "repo", {
        "Lambda/results/gb300_n18/llama31_8b/result_1.txt": log,
        "Lambda/results/gb300_n18/llama31_8b/result_2.txt": "no MLLOG here"})
    out = tmp_path / "steps.json"
    out.write_text(json.dumps({"v5.0|flux1|X / y": {"step_s": 1.0}}))
    assert logged.save_steps(repo, "v5.1", "llama31_8b", out) == 1
    saved = json.loads(out.read_text())
    entry = saved["v5.1|llama31_8b|Lambda / gb300_n18"]
    assert entry["step_s"] == 0.161 and entry["how"] == "train_step_time"
    assert entry["log"] == "Lambda/results/gb300_n18/llama31_8b/result_1.txt"
    assert len(entry["commit"]) == 40 and saved["v5.0|flux1|X / y"] == {"step_s": 1.0}


def test_a_system_whose_runs_start_at_one_is_read_from_its_first_log(logged, tmp_path):
    """result_files takes result_0.txt, or the lowest-numbered log (Lambda's start at 1;
    result_10 sorts before result_2 as text, not as a number)."""
    _repo_with(tmp_path, {f"Lambda/results/gb300_n18/llama31_8b/result_{n}.txt": f"run {n}\n"
                          for n in (10, 2, 1)})
    assert logged.result_files(tmp_path, "llama31_8b") == {("Lambda", "gb300_n18"): (
        "Lambda/results/gb300_n18/llama31_8b/result_1.txt", "run 1\n")}


def test_dlrms_end_of_run_throughput_gives_way_to_the_time_between_evaluations(logged):
    """HugeCTR logs one throughput, over the run with its evaluations in it (nyx_n1: 22.9 M
    samples/s, 2.42 ms a step); training alone is the time from an evaluation's end to the
    next one's start over the samples between them (epoch_num x train_samples)."""
    epoch = 4_195_197_692
    lines = [_line("global_batch_size", 55296, 0), _line("train_samples", epoch, 0)]
    t = 1_000
    for i in range(1, 5):
        lines += [_line("eval_start", None, t, epoch_num=0.05 * i),
                  _line("eval_stop", None, t + 990, epoch_num=0.05 * i)]
        t += 990 + 8_153
    lines.append(_line("tracked_stats", {"throughput": 22_887_721.4}, t, step=0.2))
    step, how = logged.step_seconds(lines)
    assert how == "between evaluations"
    assert step == pytest.approx(55296 * 8.153 / (0.05 * epoch))          # 2.149 ms
