"""A requeued or resumed attempt reopens the same MLflow run and does not log the steps it
redoes a second time (MLflow keeps every point: a redone eval would show twice)."""
from mlflow.tracking import MlflowClient

from conftest import seed_mlflow_store
from pinchpoint.tracking.mlflow_run import RunTracker


def test_a_resumed_run_skips_metrics_at_steps_already_logged(tmp_path):
    seed_mlflow_store(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"

    def tracker():
        return RunTracker(uri, str(tmp_path / "artifacts"), "resume", False, 10.0)
    first = tracker()
    run_id = first.start("point", {})
    for step in (8, 16, 24):
        first.log_metrics({"train_loss": 1.0 / step, "eval_auroc": 0.5}, step=step)
    first.end("aborted")   # the time limit hit after the eval at 24, before its checkpoint

    second = tracker()      # the next attempt, resumed from the checkpoint at step 16
    assert second.start("point", {}, resume_run_id=run_id) == run_id
    assert second.step_floor == 24
    for step in (24, 32):   # redoes 17..24, then goes on
        second.log_metrics({"train_loss": 2.0, "eval_auroc": 0.6}, step=step)
    second.end("success")
    history = MlflowClient(uri).get_metric_history(run_id, "train_loss")
    assert [(h.step, h.value) for h in history] == [(8, 1 / 8), (16, 1 / 16), (24, 1 / 24),
                                                    (32, 2.0)]
