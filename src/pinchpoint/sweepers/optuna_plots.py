"""Optuna's own visualisations of a study: PNG (matplotlib) and interactive HTML (plotly)."""
from __future__ import annotations

import logging
import os
import warnings

log = logging.getLogger(__name__)


def save_plots(study, out: str, objectives: list[str]) -> list[str]:
    """Optimization history and parameter importance; returns the files written. A plot that
    cannot be drawn yet (too few finished trials, one distinct value) is skipped with a note."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization as vis
    import optuna.visualization.matplotlib as vis_mpl

    target, name = None, objectives[0]
    if len(study.directions) > 1:  # plot the first objective
        target = lambda t: t.values[0]  # noqa: E731
    files, html = [], []
    plots = {"optimization_history": "plot_optimization_history",
             "param_importances": "plot_param_importances"}
    for stem, fn in plots.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "experimental" notices, not news to a user
            try:
                ax = getattr(vis_mpl, fn)(study, target=target, target_name=name)
                fig = getattr(ax, "figure", None) or ax.flat[0].figure
                fig.set_size_inches(8, 5)
                fig.tight_layout()
                path = os.path.join(out, f"{stem}.png")
                fig.savefig(path, dpi=110)
                plt.close(fig)
                files.append(path)
            except Exception as err:
                log.info("optuna %s plot skipped: %s", stem, err)
                continue
            try:  # one HTML page for all plots, so plotly.js is embedded once (works offline)
                html.append(getattr(vis, fn)(study, target=target, target_name=name).to_html(
                    full_html=False, include_plotlyjs=not html))
            except Exception as err:  # plotly missing: the PNG is still there
                log.info("optuna %s HTML skipped: %s", stem, err)
    if html:
        path = os.path.join(out, "optuna_plots.html")
        with open(path, "w") as f:
            f.write("<html><head><meta charset='utf-8'><title>Optuna study "
                    f"{study.study_name}</title></head><body>{''.join(html)}</body></html>")
        files.append(path)
    return files
