"""What a run logs to MLflow: grouped metric names that map back to phase_summary.json's flat
keys, no series for collectives never called, params of what the run used, the phase chart."""
from pinchpoint.analysis.plots import phase_chart
from pinchpoint.metric_names import flat_name, metric_name, run_metrics
from pinchpoint.tracking.run_record import used_params

FLAT = ["data_wait_fraction", "phase_eval_s", "comm_all_to_all_bytes_per_step",
        "data_wait_s_min", "checkpoint_write_bytes", "data_bytes_read", "step_time_p50_s",
        "time_to_train_s", "throughput_samples_per_s", "epoch_fraction", "moe_dropped_fraction"]


def test_names_group_and_map_back():
    assert metric_name("data_wait_fraction") == "phase/data_wait_fraction"
    assert metric_name("comm_all_to_all_bytes_per_step") == "comm/all_to_all/bytes_per_step"
    assert metric_name("time_to_train_s") == "time_to_train_s"   # objectives keep their names
    assert all(flat_name(metric_name(k)) == k for k in FLAT)


def test_only_collectives_that_were_called():
    summary = {"comm_all_reduce_calls_per_step": 2.0, "comm_all_reduce_bytes_per_step": 64.0,
               "comm_all_to_all_calls_per_step": 0.0, "comm_all_to_all_bytes_per_step": 0.0,
               "status": "success", "success": 1.0}
    assert run_metrics(summary) == {"comm/all_reduce/calls_per_step": 2.0,
                                    "comm/all_reduce/bytes_per_step": 64.0, "success": 1.0}


def test_params_of_what_the_run_used():
    params = {"model.scale": "proxy", "model.proxy.embedding_dim": 16,
              "model.full.num_embeddings_per_feature": [40_000_000] * 26,
              "model.smoke.embedding_dim": 4, "gpu.name": "h200", "seed": 0}
    assert used_params(params, "cpu") == {"model.scale": "proxy",
                                          "model.proxy.embedding_dim": 16, "seed": 0}
    assert "gpu.name" in used_params(params, "cuda:0")


def test_phase_chart_is_a_png(tmp_path):
    summary = {"phase_data_wait_s": 1.0, "phase_forward_backward_s": 3.0, "bottleneck": "fb"}
    path = phase_chart(summary, "a run", str(tmp_path))
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert phase_chart({}, "empty", str(tmp_path)) is None
