"""The config machinery: one declaration per parameter -> absl flags, validation, identity."""
import dataclasses
import glob
import os
from typing import Optional

from absl import flags
import pytest

from experiments import config
from experiments import workdir as workdir_lib


@dataclasses.dataclass(frozen=True)
class Toy(config.StudyConfig):
  steps: int = config.param(10, "Steps.", low=1)
  rate: float = config.param(0.1, "Rate.", above=0)
  loss: str = config.param("clip", "Loss.", choices=("clip", "siglip"))
  probs: tuple[float, ...] = config.param((0.0, 1.0), "Probabilities.", low=0.0, high=1.0,
                                          sort=True)
  names: tuple[str, ...] = config.param(("a",), "Names.", choices=("a", "b"))
  note: Optional[str] = config.param(None, "A note.", run_only=True)

  def validate(self):
    if self.steps < len(self.probs):
      config.fail("steps", self.steps, "allowed: >= the number of --probs")


def parse(*argv):
  fv = flags.FlagValues()
  config.define_flags(Toy, fv)
  fv(["prog", *argv])
  return config.from_flags(Toy, fv)


def test_flags_come_from_the_fields_with_defaults_and_types():
  cfg = parse()
  assert cfg == Toy()
  cfg = parse("--steps=5", "--probs=1,0.5", "--names=b,a", "--loss=siglip", "--seeds=3")
  assert cfg.steps == 5 and cfg.probs == (0.5, 1.0) and cfg.names == ("b", "a")
  assert cfg.loss == "siglip" and cfg.seeds == (3,)


@pytest.mark.parametrize("arg, needle", [
    ("--steps=0", "--steps=0: allowed: an integer >= 1"),
    ("--rate=0", "--rate=0.0: allowed: a number > 0"),
    ("--rate=nan", "--rate=nan: allowed"),
    ("--loss=mse", "--loss=mse: unknown 'mse'; allowed: clip, siglip"),
    ("--probs=0.5,2", "--probs=0.5,2: allowed: comma-separated numbers >= 0.0 and <= 1.0"),
    ("--probs=0.5,0.5", "distinct"),
    ("--probs=x", "--probs=x: allowed"),
    ("--names=c", "unknown 'c'"),
    ("--seeds=", "at least one"),
    ("--steps=1", "--steps=1: allowed: >= the number of --probs"),     # validate()
])
def test_bad_values_are_one_line_flag_errors(arg, needle):
  with pytest.raises(config.FlagError) as e:
    parse(arg)
  assert needle in str(e.value) and "\n" not in str(e.value)
  # the control: the same flag with a good value parses
  good = {"--steps": "--steps=3", "--rate": "--rate=1", "--loss": "--loss=clip",
          "--probs": "--probs=0.5", "--names": "--names=b", "--seeds": "--seeds=1"}
  parse(good[arg.split("=")[0]])


def test_identity_is_every_field_but_the_run_options():
  ident = config.identity(Toy())
  assert "steps" in ident and "seeds" in ident and "prng_impl" in ident
  for run_only in ("workdir", "log_every", "checkpoint_every", "compile_cache", "distributed",
                   "coordinator_address", "num_processes", "process_id", "heartbeat_timeout",
                   "note"):
    assert run_only not in ident
  assert set(ident) | set(config.run_only_fields(Toy)) == {f.name for f in dataclasses.fields(Toy)}


def _changed(cfg, field: dataclasses.Field):
  """``cfg`` with one field changed to another value of its type."""
  value = getattr(cfg, field.name)
  if isinstance(value, bool):
    new = not value
  elif isinstance(value, (int, float)):
    new = value + 1
  elif isinstance(value, str):
    others = [c for c in field.metadata["choices"] if c != value]
    new = others[0] if others else value + "x"
  elif isinstance(value, tuple) and not value:
    new = (field.metadata["choices"] or ("changed",))[:1]
  elif isinstance(value, tuple):
    new = value[:-1] if len(value) > 1 else value + value
  else:
    raise AssertionError(f"{field.name}: {value!r}")
  return dataclasses.replace(cfg, **{field.name: new})


def study_configs():
  from experiments import caption_stats_config, contrastive, contrastive_losses
  from experiments import contrastive_suppression_config, orbit, pretrained_config, recover
  return [("orbit", orbit.OrbitConfig), ("contrastive", contrastive.ContrastiveConfig),
          ("recover", recover.RecoverConfig), ("pretrained", pretrained_config.PretrainedConfig),
          ("caption_stats", caption_stats_config.CaptionStatsConfig),
          ("contrastive_losses", contrastive_losses.LossesConfig),
          ("contrastive_suppression", contrastive_suppression_config.SuppressionConfig)]


@pytest.mark.parametrize("study, cls", study_configs())
def test_changing_any_result_defining_field_is_refused_by_a_finished_workdir(tmp_path, study, cls):
  cfg = cls()
  path = str(tmp_path / study)
  workdir_lib.Workdir(path, study, config.identity(cfg))
  result_fields = [f for f in dataclasses.fields(cls) if not f.metadata["run_only"]]
  assert len(result_fields) >= 5
  for f in result_fields:
    with pytest.raises(config.FlagError, match=rf"different flags \({f.name}\)"):
      workdir_lib.Workdir(path, study, config.identity(_changed(cfg, f)))
  for name in config.run_only_fields(cls):          # the control: run options may change
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    if getattr(cfg, name) is not None:
      workdir_lib.Workdir(path, study, config.identity(_changed(cfg, f)))


@pytest.mark.parametrize("flagfile", sorted(glob.glob(os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments", "configs",
    "*.flags"))))
def test_every_shipped_flagfile_parses_and_validates(flagfile, tmp_path):
  """A typo in a shipped flagfile fails here, not minutes into a user's run. A flagfile whose
  header asks the user for an input gets a stand-in for it (a caption file)."""
  classes = dict(study_configs())
  name = os.path.basename(flagfile).removesuffix(".flags")
  study = max((s for s in classes if name == s or name.startswith(s + "_")), key=len)
  user_input = {"caption_stats_corpus": [f"--caption_files={tmp_path / 'captions.txt'}"]}
  (tmp_path / "captions.txt").write_text("a red traffic light\n")
  fv = flags.FlagValues()
  config.define_flags(classes[study], fv)
  fv(["prog", f"--flagfile={flagfile}", *user_input.get(name, [])])
  cfg = config.from_flags(classes[study], fv)
  assert cfg.workdir and cfg.seeds
