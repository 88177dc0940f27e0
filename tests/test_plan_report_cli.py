"""`pinchpoint report --plan CSV` draws a plan sweep like a measured one."""
from pinchpoint.cli import main


def test_report_draws_a_plan_sweep(tmp_path, capsys):
    csv = tmp_path / "plan.csv"
    assert main(["plan", "model=llama31_405b", "model.scale=full", "+gpu=gb200",
                 "parallel.dp_shard=-1", "parallel.world_size=2560", "parallel.tp=1,8",
                 "parallel.pp=4,8", "model.full.global_batch_size=1280", "--csv", str(csv)]) == 0
    assert main(["report", "--plan", str(csv), "--x", "parallel.tp"]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "plan.png").stat().st_size > 10_000
    assert "crossover" in out and "parallel.tp" in out
