"""A study's plots as PNG (no 4.8 MB HTML per plot): the optimisation history (trials on an
integer axis, the best so far, and a band for trials with no value), parameter importances
when at least two trials have a finite value, and the Pareto front for two objectives."""
from __future__ import annotations

import logging
import math
import os
import warnings

log = logging.getLogger(__name__)
NO_VALUE = "no value (failed, pruned,\nor did not reach target)"


def save_plots(study, out: str, names: list[str]) -> tuple[list[str], list[str]]:
    """Returns (files written, notes on plots not drawn and why)."""
    import matplotlib
    matplotlib.use("Agg")

    os.makedirs(out, exist_ok=True)
    files, notes = [], []
    if len(study.directions) > 1:
        files.append(_pareto(study, names, os.path.join(out, "pareto_front.png")))
    else:
        files.append(_history(study, names[0], os.path.join(out, "optimization_history.png")))
    path, note = _importances(study, names[0], os.path.join(out, "param_importances.png"))
    files += [path] if path else []
    notes += [note] if note else []
    for n in notes:
        log.info("optuna plot skipped: %s", n)
    return [f for f in files if f], notes


def _finite(study, index: int = 0):
    import optuna
    return [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE
            and math.isfinite(t.values[index])]


def _history(study, name: str, path: str) -> str:
    import matplotlib.pyplot as plt

    fig = history_figure(study, name)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def history_figure(study, name: str):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    good = sorted(_finite(study), key=lambda t: t.number)
    shown = {t.number for t in good}
    missed = [t for t in study.trials if t.number not in shown]
    if missed:
        fig, (ax, band) = plt.subplots(2, 1, figsize=(8, 5.2), sharex=True,
                                       gridspec_kw={"height_ratios": [6, 1]})
    else:   # no empty band
        fig, ax = plt.subplots(figsize=(8, 4.6))
        band = ax
    ax.plot([t.number for t in good], [t.value for t in good], "o", color="#1f77b4",
            label=f"trial ({name})")
    best, line = None, []
    pick = min if study.direction.name == "MINIMIZE" else max
    for t in good:
        best = t.value if best is None else pick(best, t.value)
        line.append(best)
    if good:
        ax.step([t.number for t in good], line, where="post", color="#d62728",
                label="best so far")
        ax.legend(fontsize=8)
    ax.set_ylabel(name)
    ax.set_title(f"Optuna study {study.study_name}: {len(study.trials)} trial(s)")
    ax.grid(alpha=0.3)
    if missed:
        band.plot([t.number for t in missed], [0] * len(missed), "x", color="#7f7f7f", ms=8,
                  mew=2)
        for t in missed:
            band.annotate(t.state.name.lower() if t.state.name != "COMPLETE" else "no target",
                          (t.number, 0), xytext=(0, 6), textcoords="offset points",
                          ha="center", fontsize=6, color="#7f7f7f")
        band.set_yticks([0], [NO_VALUE], fontsize=7)
        band.set_ylim(-1, 1.5)
    band.set_xlabel("trial number")
    band.xaxis.set_major_locator(MaxNLocator(integer=True))
    if study.trials:
        band.set_xlim(-0.5, max(t.number for t in study.trials) + 0.5)
    fig.tight_layout()
    return fig


def _pareto(study, names: list[str], path: str) -> str:
    import matplotlib.pyplot as plt

    import optuna

    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE
            and all(math.isfinite(v) for v in t.values[:2])]
    front = {t.number for t in study.best_trials}
    fig, ax = plt.subplots(figsize=(7, 5))
    for on_front, style, label in ((False, "o", "trial"), (True, "o", "Pareto front")):
        pts = [t for t in done if (t.number in front) == on_front]
        ax.plot([t.values[0] for t in pts], [t.values[1] for t in pts], style,
                color="#d62728" if on_front else "#9ecae1", label=label)
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1] if len(names) > 1 else "objective 1")
    ax.set_title(f"Optuna study {study.study_name}: {len(done)} completed trial(s)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _importances(study, name: str, path: str):
    """(path, None), or (None, why not)."""
    import matplotlib.pyplot as plt

    import optuna

    finite = _finite(study)
    if len(finite) < 2:
        return None, (f"param importances need at least 2 completed trials with a finite "
                      f"{name}; this study has {len(finite)}")
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)   # no "study created" for the copy
    try:
        copy = optuna.create_study(directions=study.directions)   # the finite trials only
    finally:
        optuna.logging.set_verbosity(level)
    copy.add_trials(finite)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # "experimental" notices, not news to a user
            scores = optuna.importance.get_param_importances(
                copy, target=(lambda t: t.values[0]) if len(study.directions) > 1 else None)
    except (RuntimeError, ValueError) as err:  # e.g. every parameter took one value
        return None, f"param importances could not be computed: {err}"
    if not scores:
        return None, "param importances: no parameter varied across the finite trials"
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.5 * len(scores)))
    keys = list(scores)[::-1]
    ax.barh(keys, [scores[k] for k in keys], color="#1f77b4")
    ax.set_xlabel(f"importance for {name} (fANOVA, {len(finite)} finite trials)")
    ax.set_xlim(0, 1)
    ax.set_title("Which parameter matters")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path, None
