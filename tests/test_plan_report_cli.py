"""`pinchpoint report --plan CSV` draws a plan sweep like a measured one."""
from pinchpoint.cli import main


def test_report_draws_a_plan_sweep(tmp_path, capsys):
    csv = tmp_path / "plan.csv"
    assert main(["plan", "model=llama31_405b", "model.scale=full", "+gpu=gb200",
                 "parallel.dp_shard=-1", "parallel.world_size=2560", "parallel.tp=1,8",
                 "parallel.pp=4,8", "model.full.global_batch_size=1280",
                 "model.full.eval_every_samples=17920",  # a multiple of the batch, as train.py asks
                 "--csv", str(csv)]) == 0
    assert main(["report", "--plan", str(csv), "--x", "parallel.tp"]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "plan.png").stat().st_size > 10_000
    assert "crossover" in out and "parallel.tp" in out


def test_plot_of_a_plan_with_no_valid_point_says_why(tmp_path, capsys):
    """GBS 1152 is no multiple of any dp here: every row carries its error, and --plot says
    there is nothing to draw (it crashed inside matplotlib's log scale)."""
    code = main(["plan", "model=llama31_405b", "model.scale=full", "+gpu=gb200",
                 "parallel.dp_shard=-1", "parallel.world_size=2560", "parallel.tp=4,8",
                 "parallel.pp=8", "--csv", str(tmp_path / "plan.csv"), "--plot", "parallel.tp"])
    err = capsys.readouterr().err
    assert code == 2 and "no point of this plan is valid" in err and "Traceback" not in err


def test_plot_by_takes_a_comma_list_and_names_an_unknown_axis(tmp_path, capsys):
    args = ["plan", "model=llama31_405b", "model.scale=full", "+gpu=gb200",
            "parallel.dp_shard=-1", "parallel.world_size=2560", "parallel.tp=4,8",
            "parallel.pp=4,8", "parallel.cp=1,2", "model.full.global_batch_size=1280",
            "model.full.eval_every_samples=17920",  # a multiple of the batch, as train.py asks
            "--csv", str(tmp_path / "plan.csv"), "--plot", "parallel.tp"]
    assert main([*args, "--by", "parallel.pp,parallel.cp"]) == 0
    capsys.readouterr()
    assert (tmp_path / "plan.png").stat().st_size > 10_000
    assert main([*args, "--by", "parallel.ep"]) == 2
    assert "--by parallel.ep: not a column" in capsys.readouterr().err
