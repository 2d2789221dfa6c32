"""What every study's report shares: statistics over seeds, markdown tables, figures.

Summaries give the mean, the sample standard deviation and the half-width of the 95% t-interval
of the mean over seeds (``<metric>_mean``, ``_sd``, ``_ci95``); ``pm`` prints mean ± ci95.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

from experiments import workdir as workdir_lib


def t_quantile_975(dof: int) -> float:
  """The 97.5% quantile of Student's t with ``dof`` degrees of freedom."""
  from scipy import stats          # scipy comes with scikit-learn
  return float(stats.t.ppf(0.975, dof))


def mean_sd_ci(values: Sequence[float]) -> tuple[float, float, float]:
  n = len(values)
  mean = sum(values) / n
  if n < 2:
    return mean, 0.0, float("nan")
  sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
  return mean, sd, t_quantile_975(n - 1) * sd / math.sqrt(n)


def summarize(rows: Sequence[dict], group_keys: Sequence[str], metrics: Sequence[str]) -> list[dict]:
  """Mean, sd and 95% interval of each metric over the rows that share ``group_keys`` (the seeds
  of one run). A metric that is missing or None in some row is summarised over the others."""
  groups: dict[tuple, list[dict]] = {}
  for r in rows:
    groups.setdefault(tuple(r[k] for k in group_keys), []).append(r)
  out = []
  for key, rs in groups.items():
    entry = dict(zip(group_keys, key))
    entry["n"] = len(rs)
    for m in metrics:
      values = [float(r[m]) for r in rs if r.get(m) is not None]
      if values:
        entry[m + "_mean"], entry[m + "_sd"], entry[m + "_ci95"] = mean_sd_ci(values)
    out.append(entry)
  return out


def pm(entry: dict, metric: str, fmt: str = "{:.3f}") -> str:
  """``mean ± ci95`` (``mean`` alone for one seed)."""
  if metric + "_mean" not in entry:
    return "-"
  ci = entry.get(metric + "_ci95", float("nan"))
  if entry.get("n", 1) < 2 or not math.isfinite(ci):
    return fmt.format(entry[metric + "_mean"])
  return (fmt + " ± " + fmt).format(entry[metric + "_mean"], ci)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
  return "\n".join(lines)


def flatten(row: dict, sep: str = ".") -> dict:
  """Nested dicts of metrics as one flat dict: ``{"probe_acc": {"light": x}}`` -> ``probe_acc.light``
  (so ``summarize`` can average metrics keyed by attribute)."""
  out = {}
  for key, value in row.items():
    if isinstance(value, dict):
      out.update({f"{key}{sep}{k}": v for k, v in flatten(value, sep).items()})
    else:
      out[key] = value
  return out


def pyplot():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def read_metrics(path: str) -> list[dict]:
  """The per-step records of one run's ``metrics.jsonl`` ([] if it does not exist; local or
  ``gs://``; a torn last line dropped, any other bad line an error naming the file)."""
  from invariance import train
  return train.read_metrics(path)


def plot_loss_curves(workdir: workdir_lib.Workdir, runs: Sequence[tuple[str, int]],
                     name: str = "loss_curves.png", title: str = "") -> None:
  """One panel of training-loss curves, a line per (run, seed), from the runs' metrics.jsonl."""
  plt = pyplot()
  fig, ax = plt.subplots(figsize=(8, 4))
  for run, seed in runs:
    records = read_metrics(workdir.metrics_path(run, seed))
    if records:
      ax.plot([r["step"] for r in records], [r["loss"] for r in records], lw=0.8,
              label=f"{run} s{seed}" if seed == runs[0][1] else None)
  ax.set_xlabel("step")
  ax.set_ylabel("training loss")
  ax.set_title(title or f"{workdir.study}: training loss per run")
  ax.legend(fontsize=7, ncol=2)
  workdir_lib.save_figure(fig, workdir.file(name))
  plt.close(fig)
