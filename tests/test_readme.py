"""README's API tour runs as written (a stale example is a failing test)."""
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_api_tour_runs(capsys):
  with open(os.path.join(ROOT, "README.md")) as f:
    text = f.read()
  section = text[text.index("## API tour"):]
  code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
  exec(compile(code, "README.md (API tour)", "exec"), {})
  printed = capsys.readouterr().out.split()
  assert float(printed[0]) < 1e-4 and float(printed[1]) == 0.0     # the audit line's output


STUDIES = {"orbit": ("experiments.orbit_config", "OrbitConfig"),
           "contrastive": ("experiments.contrastive_config", "ContrastiveConfig"),
           "recover": ("experiments.recover_config", "RecoverConfig"),
           "pretrained": ("experiments.pretrained_config", "PretrainedConfig"),
           "caption_stats": ("experiments.caption_stats_config", "CaptionStatsConfig")}


def _study_commands(text: str) -> list[tuple[str, list[str]]]:
  """Every ``python -m experiments.<study> ...`` command README shows, in code blocks (lines
  joined at trailing backslashes, comments dropped) or inline code spans, as (study, flags)."""
  import shlex
  fence = re.compile(r"```[a-z]*\n(.*?)```", re.S)
  snippets = []
  for block in fence.findall(text):
    snippets += [line.split(" #")[0] for line in block.replace("\\\n", " ").splitlines()]
  snippets += [s.replace("\n", " ") for s in re.findall(r"`([^`]*)`", fence.sub("", text))]
  commands = []
  for snippet in (s for s in snippets if "-m experiments." in s):
    words = shlex.split(snippet.replace("\"", " "))    # a command quoted for ssh
    for i, word in enumerate(words[:-1]):
      study = words[i + 1].removeprefix("experiments.")
      if word == "-m" and study in STUDIES:
        args = []
        for w in words[i + 2:]:
          if w in ("&&", "||", ";", "|", ">", "2>&1") or not w.startswith("--"):
            break
          args.append(w)
        if not {"--help", "--helpfull", "--helpshort"} & set(args):   # absl's app prints and exits
          commands.append((study, args))
  return commands


def _validate(study: str, args: list[str]) -> None:
  """Parse ``args`` (flagfiles read, relative to the repository) into the study's config and
  validate it without running anything; a bad flag raises absl's ``flags.Error`` or FlagError."""
  import importlib
  from absl import flags
  from experiments import config
  module, name = STUDIES[study]
  cls = getattr(importlib.import_module(module), name)
  fv = flags.FlagValues()
  config.define_flags(cls, fv)
  cwd = os.getcwd()
  os.chdir(ROOT)
  try:
    fv(["prog", *args])
    config.from_flags(cls, fv)
  finally:
    os.chdir(cwd)


def _documents() -> list[str]:
  """README.md and every page under docs/ (the study pages carry most commands)."""
  import glob
  return [os.path.join(ROOT, "README.md")] + sorted(
      glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True))


def test_every_study_command_in_readme_passes_flag_validation():
  """A stale command (a renamed flag, a value a later check refuses) fails here, not on a user's
  machine: each command's flags, flagfiles included, are parsed and validated without running."""
  commands = []
  for path in _documents():
    with open(path) as f:
      commands += [(study, args, os.path.relpath(path, ROOT)) for study, args in
                   _study_commands(f.read())]
  assert len(commands) >= 10 and {s for s, _, _ in commands} == set(STUDIES), commands
  from experiments import config
  for study, args, where in commands:
    try:
      _validate(study, args)
    except Exception as e:
      # a path that an earlier run creates (--pretrained_workdir) is not the command's fault
      # (or an unfinished one here, while such a run is in progress)
      if not (isinstance(e, config.FlagError) and ("no such" in str(e) or str(e).startswith(
          "--pretrained_workdir="))):
        raise AssertionError(f"{where}: python -m experiments.{study} {' '.join(args)}: {e}"
                             ) from e


def test_the_command_check_rejects_a_stale_command():
  """Control: the same extraction and validation refuse a command a later check made stale."""
  from experiments import config
  (study, args), = _study_commands(
      "```bash\npython -m experiments.contrastive --flagfile=experiments/configs/"
      "contrastive_smoke.flags \\\n    --steps=3   # comment\n```\n")
  assert study == "contrastive" and args[-1] == "--steps=3"
  try:
    _validate(study, args)
  except config.FlagError as e:
    assert "probe_steps" in str(e)
  else:
    raise AssertionError("--steps=3 with the smoke flagfile's --probe_steps=0,6,12 passed")
