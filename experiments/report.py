"""What every study's report shares: statistics over seeds, markdown tables, figures.

Summaries give the mean, the sample standard deviation and the half-width of the 95% t-interval
of the mean over seeds (``<metric>_mean``, ``_sd``, ``_ci95``); ``pm`` prints mean ± ci95.

Paired statistics and families of them (``paired_cell`` prints one, marked ``HOLM_MARK`` when it
survives its family): ``paired_t`` (per-seed differences: mean, sd, t-interval,
two-sided p), ``holm`` (Holm-Bonferroni adjusted p-values of a family), ``holm_family`` (both, with
the interval at each endpoint's Holm step), and ``seeds_for_power`` (how many seeds a paired t-test
needs to detect an effect, from a measured sd).
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


def paired_t(diffs: Sequence[float], level: float = 0.95) -> dict:
  """The paired t statistics of per-seed differences: ``{"n", "mean", "sd", "ci", "p"}`` with ``ci``
  the half-width of the two-sided ``level`` t-interval of the mean and ``p`` the two-sided p-value
  of mean = 0 (nan for fewer than 2 seeds; p = 0 or 1 when every difference is equal)."""
  from scipy import stats          # pylint: disable=import-outside-toplevel
  values = [float(d) for d in diffs]
  n = len(values)
  if n == 0:
    raise ValueError("diffs is empty; allowed: at least one paired difference")
  if not 0 < level < 1:
    raise ValueError(f"level={level!r} is invalid; allowed: a probability in (0, 1)")
  mean = sum(values) / n
  if n < 2:
    return {"n": 1, "mean": mean, "sd": 0.0, "ci": float("nan"), "p": float("nan")}
  sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
  se = sd / math.sqrt(n)
  ci = float(stats.t.ppf(0.5 + level / 2, n - 1)) * se
  if se == 0:
    p = 1.0 if mean == 0 else 0.0
  else:
    p = float(2 * stats.t.sf(abs(mean / se), n - 1))
  return {"n": n, "mean": mean, "sd": sd, "ci": ci, "p": p}


def holm(p_values: Sequence[float]) -> list[float]:
  """Holm-Bonferroni adjusted p-values, in the input order: the k-th smallest of m p-values is
  multiplied by m - k + 1, made non-decreasing along that order and capped at 1. An endpoint
  survives the correction at level alpha when its adjusted p-value is <= alpha."""
  ps = [float(p) for p in p_values]
  if any(not 0 <= p <= 1 for p in ps):
    raise ValueError(f"p_values={ps}: allowed: probabilities in [0, 1]")
  m, order = len(ps), sorted(range(len(ps)), key=lambda i: ps[i])
  adjusted, running = [0.0] * m, 0.0
  for k, i in enumerate(order):
    running = max(running, min(1.0, (m - k) * ps[i]))
    adjusted[i] = running
  return adjusted


def holm_family(diffs: dict[str, Sequence[float]], alpha: float = 0.05) -> dict[str, dict]:
  """A family of paired endpoints ``{name: per-seed differences}`` read at once: for each,
  ``paired_t`` (its own 95% interval), ``p_holm`` (Holm-adjusted), ``survives`` (p_holm <= alpha)
  and ``ci_holm``: the half-width of the t-interval at the level Holm's step gives that endpoint
  (1 - alpha / (m - k + 1) for the k-th smallest p-value), the interval to read beside the
  others. Endpoints with fewer than 2 seeds get no p-value and do not survive."""
  stats_ = {name: paired_t(d) for name, d in diffs.items()}
  tested = [name for name, s in stats_.items() if s["n"] >= 2]
  adjusted = dict(zip(tested, holm([stats_[name]["p"] for name in tested])))
  order = sorted(tested, key=lambda name: stats_[name]["p"])
  m, out = len(tested), {}
  for name, s in stats_.items():
    entry = {**s, "p_holm": adjusted.get(name, float("nan")), "m": m}
    entry["survives"] = bool(name in adjusted and adjusted[name] <= alpha)
    if name in adjusted:
      step = m - order.index(name)
      entry["ci_holm"] = paired_t(diffs[name], 1 - alpha / step)["ci"]
    out[name] = entry
  return out


HOLM_MARK = "†"
HOLM_LEGEND = (f"{HOLM_MARK}: the interval's endpoint survives Holm-Bonferroni correction across its "
               "family (adjusted p <= 0.05); intervals are 95% paired t-intervals over seeds.")


def paired_cell(entry: dict, fmt: str = "{:+.3f}") -> str:
  """One endpoint of ``paired_t`` / ``holm_family`` as a table cell: ``mean ± ci`` (``mean`` alone
  for one seed), followed by ``HOLM_MARK`` when it survives its family's correction."""
  text = fmt.format(entry["mean"])
  if entry["n"] >= 2:
    text += " ± " + fmt.replace("+", "").format(entry["ci"])
  return text + (f" {HOLM_MARK}" if entry.get("survives") else "")


def power(effect: float, sd: float, n: int, alpha: float = 0.05) -> float:
  """The probability that a two-sided paired t-test at ``alpha`` on ``n`` seeds with this ``sd``
  finds a true mean difference ``effect`` (noncentral t; ``report.seeds_for_power``'s criterion)."""
  from scipy import stats  # pylint: disable=import-outside-toplevel
  crit, shift = stats.t.ppf(1 - alpha / 2, n - 1), effect / sd * math.sqrt(n)
  return float(stats.nct.sf(crit, n - 1, shift) + stats.nct.cdf(-crit, n - 1, shift))


def detectable_effect(sd: float, n: int, alpha: float = 0.05, target: float = 0.8) -> float:
  """The smallest true effect a paired t-test on ``n`` seeds with this ``sd`` detects with
  probability ``target`` (bisection on ``power``)."""
  if n < 2 or not sd > 0:
    return float("nan")
  got = lambda e: power(e, sd, n, alpha)
  lo, hi = 0.0, sd
  while not got(hi) >= target:                   # grow the bracket (nct is nan for huge shifts)
    lo, hi = hi, 2 * hi
  for _ in range(50):
    mid = (lo + hi) / 2
    lo, hi = (lo, mid) if got(mid) >= target else (mid, hi)
  return hi


def seeds_for_power(sd: float, effect: float, alpha: float = 0.05, power_: float = 0.8,
                    max_n: int = 10_000) -> int:
  """The smallest number of seeds n >= 2 for which a two-sided paired t-test at level ``alpha``
  detects a true mean difference ``effect`` with probability >= ``power_``, when the per-seed
  differences have standard deviation ``sd`` (exact, with the noncentral t distribution)."""
  if not sd > 0 or not effect > 0:
    raise ValueError(f"sd={sd!r}, effect={effect!r}: allowed: both > 0")
  for n in range(2, max_n + 1):
    if power(effect, sd, n, alpha) >= power_:
      return n
  raise ValueError(f"sd={sd}, effect={effect}: more than max_n={max_n} seeds needed")


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
