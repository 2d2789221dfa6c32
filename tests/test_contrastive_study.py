"""The contrastive study's CLI: the smoke flagfile end to end, and bad flags (sizes that cannot
fit too) fail before any work."""
import json
import os
import pathlib

from tests import cli

SMOKE = "experiments/configs/contrastive_smoke.flags"
ATTRS = {"car_color", "light", "pedestrian", "clouds"}
PER_ATTRIBUTE = ("probe_acc", "probe_acc_conv", "probe_acc_pooled", "probe_acc_penultimate",
                 "random_init_probe_acc", "random_init_probe_acc_conv", "embedding_invariance")


def _cli(*args):
  return cli.popen("contrastive", *args)


def test_smoke_flagfile_end_to_end(smoke_runs):
  workdir, returncode, output = smoke_runs.get("contrastive")
  assert returncode == 0 and not output.count("Traceback"), output[-3000:]
  workdir = pathlib.Path(workdir)
  results = json.loads((workdir / "results.json").read_text())
  assert results["study"] == "contrastive"
  assert results["flags"]["losses"] == ["clip", "siglip"]
  rows = results["rows"]
  assert {(r["loss"], r["mention_prob"]) for r in rows} == {
      (loss, p) for loss in ("clip", "siglip") for p in (0.0, 1.0)}
  for r in rows:
    assert r["embed_dim"] == 4 and r["seed"] == 0 and r["train_seconds"] > 0
    for field in PER_ATTRIBUTE:
      assert set(r[field]) == ATTRS, field
      assert all(0.0 <= v <= 1.0 + 1e-6 for v in r[field].values()), (field, r[field])
    assert 0.0 <= r["zero_shot_acc"] <= 1.0
    assert r["mentions"] == (0 if r["mention_prob"] == 0 else 256)
  assert [p["seed"] for p in results["pixel_rows"]] == [0]
  assert set(results["pixel_rows"][0]["probe_acc"]) == ATTRS
  assert len(results["summary"]) == 4 and "probe_acc/light_mean" in results["summary"][0]
  assert "| loss | p | dim |" in (workdir / "results.md").read_text()
  assert (workdir / "probe_vs_p.png").stat().st_size > 0
  assert (workdir / "loss_curves.png").stat().st_size > 0
  assert sorted(os.listdir(workdir / "checkpoints")) == [
      "clip_p0_d4", "clip_p1_d4", "siglip_p0_d4", "siglip_p1_d4"]
  assert os.listdir(workdir / "checkpoints" / "clip_p0_d4") == ["0"]


BAD = [  # (flag named in the error, arguments, text the error states)
    ("losses", ["--losses=clip,triplet"], "triplet"),
    ("mention_probs", ["--mention_probs=0,1.5"], "<= 1"),
    ("embed_dims", ["--embed_dims=0"], ">= 1"),
    ("attribute", ["--attribute=weather"], "weather"),
    ("flagfile", ["--flagfile=experiments/configs/no_such.flags"], "no_such"),
    # Sizes that cannot fit: refused up front with the estimate, not a traceback minutes later.
    ("embed_dims", ["--embed_dims=999999999999999999999999999999"], "GiB"),
    ("embed_dims", ["--embed_dims=100000000"], "GiB"),
]


def test_bad_flags_fail_in_one_line_and_leave_the_workdir_alone(tmp_path):
  workdir = tmp_path / "earlier"
  workdir.mkdir()
  (workdir / "results.json").write_text('{"study": "contrastive", "rows": ["earlier"]}')
  before = sorted(os.listdir(workdir))
  # All bad invocations at once (each is mostly interpreter and jax start-up).
  procs = [(flag, text, _cli(f"--flagfile={SMOKE}", f"--workdir={workdir}", *args))
           for flag, args, text in BAD]
  for flag, text, proc in procs:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0, flag
    lines = err.strip().splitlines()
    assert len(lines) == 1, (flag, err)
    assert lines[0].startswith("error:") and flag in lines[0] and text in lines[0], (flag, lines[0])
  assert sorted(os.listdir(workdir)) == before
  assert json.loads((workdir / "results.json").read_text())["rows"] == ["earlier"]
