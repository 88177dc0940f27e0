"""Grid sweeper with sweep resume: Hydra's BasicSweeper (same ``a=1,2 b=x,y`` grid) plus

- every point composed and validated (pinchpoint.runner.validation) before any is launched, so a
  bad value fails the sweep up front, naming the point and the field;
- resume: a point whose run key (runner/run_key.py) already has a successful run in the point's
  MLflow experiment is skipped; so is one whose unfinished run's Slurm job is still alive
  (queued, running, between requeued attempts: it is skipped and the plan says so, never
  relaunched); failed, aborted, unfinished and missing points run (a failed point with a
  checkpoint resumes it and continues its MLflow run);
- dry run (``hydra.sweeper.dry_run=true``): list what would run and why, launch nothing;
- every point runs even when an earlier one fails; the command then exits non-zero naming the
  failed points (after the sweep's MLflow parent run is closed).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobStatus
from omegaconf import OmegaConf

from pinchpoint.sweepers.space import PointsFailed, SweepError, exits_cleanly

log = logging.getLogger("pinchpoint.sweep")


@dataclass
class PlannedPoint:
    overrides: List[str]
    label: str
    run: bool
    reason: str


class GridSweeper(BasicSweeper):
    def __init__(self, max_batch_size: Optional[int] = None,
                 params: Optional[Dict[str, str]] = None, resume: bool = True,
                 dry_run: bool = False) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.resume, self.dry_run = resume, dry_run

    @exits_cleanly
    def sweep(self, arguments: List[str]) -> Any:
        assert self.config is not None and self.launcher is not None
        if self.config.get("plan_only"):
            return self._plan_only([*self._parse_config(), *arguments])
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides([*self._parse_config(), *arguments])
        points = [p for batch in self.split_arguments(overrides, None) for p in batch]
        try:
            plan = self.plan(points)
        except SweepError:
            self._discard_parent()
            raise
        todo = [p for p in plan if p.run]
        running = sum(p.reason.startswith("still running") for p in plan)
        log.info("sweep: %d point(s), %d to run, %d already succeeded%s%s", len(plan), len(todo),
                 len(plan) - len(todo) - running,
                 f", {running} still running (skipped)" if running else "",
                 " (dry run: nothing is launched)" if self.dry_run else "")
        for p in plan:
            log.info("  %s %-44s %s", "run " if p.run else "skip", p.label, p.reason)
        if self.dry_run:
            return []
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        self._tag_parent(plan)
        returns = []
        size = self.max_batch_size or len(todo) or 1
        for start in range(0, len(todo), size):
            batch = [p.overrides for p in todo[start:start + size]]
            try:
                returns.append(self.launcher.launch(batch, initial_job_idx=start))
            except Exception as err:   # e.g. the Slurm launcher's pre-flight refusal
                if getattr(err, "nothing_launched", False) and not returns:
                    self._discard_parent()
                raise
        self._fail_if_any(todo, [r for batch in returns for r in batch])
        return returns

    # --- before launching anything ---------------------------------------------------------------
    def plan(self, points: List[List[str]]) -> List[PlannedPoint]:
        from pinchpoint.errors import ConfigError
        from pinchpoint.tracking.naming import point_labels
        from pinchpoint.tracking.points import Decision, decide

        from pinchpoint.sweepers.common import DEFAULT_VALIDATOR, PointChecker

        checker = PointChecker(self.hydra_context, self.config, validator=DEFAULT_VALIDATOR)
        labels = point_labels(points)
        checked = []
        for overrides, label in zip(points, labels):
            try:
                checked.append(checker.preflight.check(overrides))
            except ConfigError as err:
                raise SweepError(f"sweep refused, nothing launched: point ({label}): {err}"
                                 ) from None
        known = self._runs_of(checked) if self.resume else {}
        planned = []
        for c, label in zip(checked, labels):
            decision = Decision(True, "resume off (hydra.sweeper.resume=false)")
            if self.resume and c.run.tracking.enabled:
                runs = known[(c.run.tracking.uri, c.run.tracking.experiment)].get(c.key, [])
                decision = still_running(runs) or decide(runs)
            planned.append(PlannedPoint(c.overrides, label, decision.run, decision.reason))
        return planned

    @staticmethod
    def _runs_of(checked: list) -> dict:
        """Each store's and experiment's runs of these points, by run key: one query each."""
        from pinchpoint.tracking.points import runs_by_key

        wanted: dict[tuple[str, str], set[str]] = {}
        for c in checked:
            if c.run.tracking.enabled:
                t = c.run.tracking
                wanted.setdefault((str(t.uri), str(t.experiment)), set()).add(c.key)
        return {where: runs_by_key(*where, keys) for where, keys in wanted.items()}

    def _plan_only(self, arguments: List[str]) -> list:
        """``-m plan_only=true``: a full-scale plan sweep is arithmetic, planned here in one
        process as ``pinchpoint plan`` plans it (sweepers/plan_grid.py: the same pre-flight
        and validation as a launch), not launched point by point: a table and a CSV in the
        sweep folder, nothing in MLflow. Points that do not fit or are invalid are marked; a
        single such point exits 2, as a single plan_only run does."""
        from pinchpoint.plan import grid, table
        from pinchpoint.sweepers.common import DEFAULT_VALIDATOR, PointChecker
        from pinchpoint.sweepers.plan_grid import plan_points, single

        self._discard_parent()
        checker = PointChecker(self.hydra_context, self.config, validator=DEFAULT_VALIDATOR)
        _, planned = plan_points(checker, arguments)
        rows = table.sort_rows([p.row for p in planned], None)
        print(table.format_table(rows, 40))
        path = table.write_csv(rows, Path(self.config.hydra.sweep.dir) / "plan.csv")
        print(f"\n{grid.summary(planned)}; table: {path}\n"
              f"draw it: pinchpoint report --plan {path}")
        if len(planned) == 1 and single(planned[0]):
            raise SystemExit(2)
        return []

    def _tag_parent(self, plan: List[PlannedPoint]) -> None:
        from pinchpoint.tracking.sweep_folder import parent_run_id
        from pinchpoint.tracking.points import tag_sweep

        parent = parent_run_id(self.config.hydra.sweep.dir)
        skipped = [p for p in plan if not p.run]
        if parent and self.config.tracking.enabled:
            tag_sweep(self.config.tracking.uri, parent, {
                "pinchpoint.points_planned": len(plan),
                "pinchpoint.points_skipped": len(skipped),
                "pinchpoint.skipped": "; ".join(f"{p.label}: {p.reason}" for p in skipped)[:5000]})

    def _discard_parent(self) -> None:
        if self.config.tracking.enabled and not self.dry_run:
            from pinchpoint.tracking.points import discard_sweep
            discard_sweep(self.config.tracking.uri, str(self.config.hydra.sweep.dir))

    # --- after -------------------------------------------------------------------------------------
    def _fail_if_any(self, todo: List[PlannedPoint], results: list) -> None:
        failed = [(p, r) for p, r in zip(todo, results) if r.status != JobStatus.COMPLETED]
        if not failed:
            return
        lines = [f"  {p.label}: {_why(r)}" for p, r in failed]
        for p, r in failed:
            err = r._return_value
            log.error("point %s failed", p.label, exc_info=(type(err), err, err.__traceback__))
        # Hydra calls on_multirun_end only when the sweep returns; close the MLflow parent
        # ourselves (FAILED, naming the points) before failing the command.
        self.hydra_context.callbacks.on_multirun_end(config=self.config)
        if self.config.tracking.enabled:
            from pinchpoint.tracking.points import fail_sweep
            fail_sweep(self.config.tracking.uri, str(self.config.hydra.sweep.dir),
                       [p.label for p, _ in failed])
        raise PointsFailed(f"{len(failed)} of {len(results)} point(s) failed:\n" + "\n".join(lines)
                         + "\nRe-run the same command to rerun only these (succeeded points "
                         "are skipped).")


def still_running(runs: list):
    """A skip decision when the point's newest run is unfinished and its Slurm job is still
    alive (queued, running, or waiting between requeued attempts): never launch a second copy."""
    from pinchpoint.cluster.liveness import still_running as alive
    from pinchpoint.tracking.points import Decision

    if not runs or runs[0].info.status != "RUNNING":
        return None
    job = alive(runs[0])
    if job is None:
        return None
    return Decision(False, f"still running ({job}, run {runs[0].info.run_id[:8]}): skipped, "
                           "not relaunched; rerun the sweep after it ends", runs[0].info.run_id)


def _why(ret) -> str:
    err = ret._return_value
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[-1] if text else ''}"[:400]
