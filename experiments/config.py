"""One config per study: each parameter is declared once, as a field of a frozen dataclass.

    @dataclasses.dataclass(frozen=True)
    class OrbitConfig(config.StudyConfig):
      steps: int = config.param(1500, "Training steps per model.", low=1)

      def validate(self):                 # cross-field checks (optional)
        ...

    config.define_flags(OrbitConfig)      # at import time of the study's main: the absl flags
    cfg = config.from_flags(OrbitConfig)  # in main: typed, validated, before any work
    config.identity(cfg)                  # every field but the run options: the workdir's identity

The absl flag of a field has the field's name, default and help; a tuple field is a list flag
(``--seeds=0,1,2``). Flagfiles and command lines stay what users know. ``identity`` is every field
whose ``param`` is not ``run_only`` (workdir, logging, checkpoint cadence, distributed start-up,
compile cache), so a new result-defining parameter can never be forgotten by the workdir contract.

Bad values raise ``FlagError`` (a ``ValueError``) with ``--name=value: allowed ...`` in one line.
"""
from __future__ import annotations

import dataclasses
import math
import os
import typing
from typing import Any, Optional, Sequence


class FlagError(ValueError):
  """A bad flag value: printed as one line, exit code 2, nothing written."""


def fail(flag: str, value, allowed: str):
  raise FlagError(f"--{flag}={value}: {allowed}")


def param(default, help: str, *, low=None, high=None, above=None, choices: Sequence[str] = (),
          run_only: bool = False, sort: bool = False, distinct: bool = True,
          allow_empty: bool = False):
  """A config field. ``low``/``high``: inclusive bounds (of every element, for a tuple); ``above``:
  exclusive lower bound; ``choices``: allowed strings; ``sort``: a tuple is stored sorted;
  ``distinct``: a tuple may not repeat values; ``run_only``: does not define results."""
  meta = dict(help=help, low=low, high=high, above=above, choices=tuple(choices),
              run_only=run_only, sort=sort, distinct=distinct, allow_empty=allow_empty)
  return dataclasses.field(default=default, metadata=meta)


def _default_cache() -> str:
  return os.path.join(os.path.expanduser("~"), ".cache", "invariance_lab", "jax")


@dataclasses.dataclass(frozen=True)
class StudyConfig:
  """Fields every study has: seeds and the PRNG (result-defining), then the run options."""

  seeds: tuple[int, ...] = param((0, 1, 2), "Seeds; one row per run x seed.", low=0,
                                 high=2**32 - 1)
  prng_impl: str = param("rbg", "jax PRNG implementation. rbg compiles in a fraction of "
                         "threefry's time on XLA:CPU (threefry's unrolled rounds cost ~5 s per "
                         "small init here).", choices=("rbg", "threefry2x32", "unsafe_rbg"))
  workdir: Optional[str] = param(None, "Where checkpoints and results go (required).",
                                 run_only=True)
  data_dir: Optional[str] = param(None, "TFDS data directory: datasets are read from it, and the "
                                  "offline defaults built into it on first use (default: "
                                  "$TFDS_DATA_DIR or ~/tensorflow_datasets).", run_only=True)
  log_every: int = param(200, "Steps between progress lines.", low=1, run_only=True)
  checkpoint_every: int = param(500, "Steps between checkpoints.", low=1, run_only=True)
  compile_cache: str = param(_default_cache(), "Persistent XLA compilation cache ('' disables): "
                             "later seeds, reruns and resumes load compiled programs instead of "
                             "recompiling them.", run_only=True)
  # Multi-host (README "Running on GPUs and Cloud TPUs"); results do not depend on these.
  distributed: bool = param(False, "Call jax.distributed.initialize before any work: one process "
                            "per host, a global data mesh over every process's devices, process 0 "
                            "writes --workdir.", run_only=True)
  coordinator_address: Optional[str] = param(
      None, "host:port of process 0 (default: $JAX_COORDINATOR_ADDRESS, or auto-detected on "
      "Cloud TPU / SLURM).", run_only=True)
  num_processes: Optional[int] = param(None, "Number of processes (default: $JAX_NUM_PROCESSES, "
                                       "or auto-detected).", run_only=True)
  process_id: Optional[int] = param(None, "This process's index (default: $JAX_PROCESS_ID, or "
                                    "auto-detected).", run_only=True)
  profile_steps: str = param("", "a:b traces steps a .. b-1 of every training run with "
                             "jax.profiler into <workdir>/profile/<run>/seed<k> (TensorBoard's "
                             "profile tab, Perfetto); '' traces nothing.", run_only=True)
  heartbeat_timeout: int = param(60, "Seconds without a heartbeat after which a process counts as "
                                 "dead: the survivors stop with an error instead of waiting "
                                 "forever.", low=1, run_only=True)

  def validate(self) -> None:
    """Cross-field checks of a study (override); per-field bounds are checked by ``from_flags``."""


STEPS_MAX = 2**31 - 1      # step counters are int32 (optax, orbax, the early-stopping state)


@dataclasses.dataclass(frozen=True)
class Convergence:
  """The convergence rule's parameters, one set of names in every study that trains to it: mix
  into a study config (``class OrbitConfig(config.StudyConfig, config.Convergence)``) and redeclare
  a field to change its default; ``early_stopping()`` is the rule ``train.fit`` runs."""

  eval_every: int = param(100, "Steps between validation evaluations (convergence rule).", low=1,
                          high=STEPS_MAX)
  patience: int = param(3, "Stop after this many evaluations in a row without a validation gain "
                        "of more than --min_delta.", low=1, high=STEPS_MAX)
  min_delta: float = param(0.005, "Validation-accuracy improvement that counts (0.005 = 0.5 "
                           "points).", low=0.0, high=1.0)

  def early_stopping(self):
    from invariance import train            # the library, not the other way round
    return train.EarlyStopping(self.eval_every, self.patience, self.min_delta)


# -- field types ----------------------------------------------------------------------------------
def _kind(cls, name: str) -> tuple[Any, bool, bool]:
  """(element type, is a tuple, is optional) of field ``name``."""
  hint = typing.get_type_hints(cls)[name]
  optional = False
  if typing.get_origin(hint) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    hint, optional = args[0], True
  if typing.get_origin(hint) is tuple:
    return typing.get_args(hint)[0], True, optional
  return hint, False, optional


def _fields(cls):
  return [f for f in dataclasses.fields(cls) if f.init]


def define_flags(cls, flag_values=None) -> None:
  """Define one absl flag per field of ``cls`` (skipping names already defined, e.g. by another
  study's module imported in the same process, as long as they are the same kind)."""
  from absl import flags
  fv = flags.FLAGS if flag_values is None else flag_values
  for f in _fields(cls):
    if f.name in fv:
      continue
    elem, is_tuple, _ = _kind(cls, f.name)
    help_ = f.metadata["help"]
    if f.metadata["choices"]:
      help_ += f" Allowed: {', '.join(map(str, f.metadata['choices']))}."
    if is_tuple:
      flags.DEFINE_list(f.name, [_format(v) for v in f.default], help_, flag_values=fv)
    elif elem is bool:
      flags.DEFINE_bool(f.name, f.default, help_, flag_values=fv)
    elif elem is int:
      flags.DEFINE_integer(f.name, f.default, help_, flag_values=fv)
    elif elem is float:
      flags.DEFINE_float(f.name, f.default, help_, flag_values=fv)
    else:
      flags.DEFINE_string(f.name, f.default, help_, flag_values=fv)


def _format(v) -> str:
  return f"{v:g}" if isinstance(v, float) else str(v)


def _bounds_text(meta, kind: str) -> str:
  parts = []
  if meta["above"] is not None:
    parts.append(f"> {meta['above']}")
  if meta["low"] is not None:
    parts.append(f">= {meta['low']}")
  if meta["high"] is not None:
    parts.append(f"<= {meta['high']}")
  return f"{kind} " + " and ".join(parts) if parts else kind


def _check_value(name: str, raw, value, meta, kind: str):
  if meta["choices"] and value not in meta["choices"]:
    fail(name, raw, f"unknown {value!r}; allowed: {', '.join(map(str, meta['choices']))}")
  if isinstance(value, (int, float)) and not isinstance(value, bool):
    ok = ((isinstance(value, int) or math.isfinite(value))
          and (meta["low"] is None or value >= meta["low"])
          and (meta["high"] is None or value <= meta["high"])
          and (meta["above"] is None or value > meta["above"]))
    if not ok:
      fail(name, raw, "allowed: " + _bounds_text(meta, kind))


def parse_field(cls, name: str, raw) -> Any:
  """The typed, checked value of field ``name`` from its flag value ``raw``."""
  f = next(f for f in _fields(cls) if f.name == name)
  meta = f.metadata
  elem, is_tuple, optional = _kind(cls, name)
  if raw is None:
    if optional:
      return None
    fail(name, raw, "required")
  kind = {int: "an integer", float: "a number", str: "a string", bool: "true/false"}[elem]
  if not is_tuple:
    value = raw
    if elem is float and isinstance(raw, int):
      value = float(raw)
    _check_value(name, raw, value, meta, kind)
    return value
  text = ",".join(str(v) for v in raw)
  plural = {int: "integers", float: "numbers", str: "names", bool: "booleans"}[elem]
  allowed = f"allowed: comma-separated {_bounds_text(meta, plural)}"
  if meta["choices"]:
    allowed = f"allowed: one or more of {', '.join(map(str, meta['choices']))}"
  try:
    values = tuple(elem(v) for v in raw)
  except ValueError:
    fail(name, text, allowed)
  if not values and not meta["allow_empty"]:
    fail(name, text, allowed + ", at least one")
  for v in values:
    if meta["choices"] and v not in meta["choices"]:
      fail(name, text, f"unknown {v!r}; {allowed}")
    _check_value(name, text, v, {**meta, "choices": ()}, "comma-separated " + plural)
  if meta["distinct"] and len(set(values)) != len(values):
    fail(name, text, allowed + ", distinct")
  return tuple(sorted(values)) if meta["sort"] else values


def from_flags(cls, flag_values=None):
  """The validated config of ``cls`` from parsed absl flags (raises ``FlagError``)."""
  from absl import flags
  fv = flags.FLAGS if flag_values is None else flag_values
  values = {f.name: parse_field(cls, f.name, fv[f.name].value) for f in _fields(cls)}
  cfg = cls(**values)
  cfg.validate()
  profile_range(cfg.profile_steps)
  return cfg


def profile_range(text: str) -> Optional[tuple[int, int]]:
  """``--profile_steps``: ``"a:b"`` -> (a, b), ``""`` -> None."""
  if not text:
    return None
  a, sep, b = text.partition(":")
  if sep and a.strip().isdigit() and b.strip().isdigit() and int(a) < int(b):
    return int(a), int(b)
  fail("profile_steps", text, "allowed: a:b with integers 0 <= a < b (steps a .. b-1 of each "
       "training run), or '' for no profile")


def identity(cfg) -> dict:
  """The result-defining fields of ``cfg`` (JSON-friendly): what a workdir is made of."""
  out = {}
  for f in _fields(type(cfg)):
    if not f.metadata.get("run_only"):
      value = getattr(cfg, f.name)
      out[f.name] = list(value) if isinstance(value, tuple) else value
  return out


def run_only_fields(cls) -> list[str]:
  return [f.name for f in _fields(cls) if f.metadata.get("run_only")]
