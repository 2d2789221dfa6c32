"""The pretrained-model study as a user runs it: the smoke flagfile on the tiny CLIP fixture (every
part of the study), resume, one-line errors, and the TFDS paths on mocked data."""
import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from experiments import pretrained_config as pc
from experiments import pretrained_data
from invariance.data import sources
from tests import cli

SMOKE = "experiments/configs/pretrained_smoke.flags"
FIXTURES = "tests/fixtures/pretrained/"


@pytest.fixture(scope="module")
def smoke(smoke_runs):
  """The smoke run, one of the shared runs (tests/cli.SmokeRuns): its workdir and its output."""
  workdir, returncode, output = smoke_runs.get("pretrained")
  assert returncode == 0, output[-3000:]
  return workdir, output


def test_smoke_run_writes_every_part(smoke):
  workdir, output = smoke
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  assert results["pretrained_weights"] is True and results["note"] is None
  assert [t["name"] for t in results["checkpoints"]] == ["clip_gelu_random", "clip_gelu_clip_gelu"]
  assert results["views"] == ["frame", "tight", "frame_grey", "tight_grey"]
  assert len(results["towers"]) == 8 and len(results["pixels"]) == 4
  row = next(r for r in results["towers"] if r["tower"] == "clip_gelu_clip_gelu" and r["view"] == "frame")
  assert set(row["curves"]) == {"block0_cls", "block0_mean", "block0_box", "block1_cls",
                                "block1_mean", "block1_box", "pre_projection", "embedding"}
  assert set(row["curves"]["embedding"]) == {"8", "48"}
  assert all(len(accs) == 2 and all(0 <= a <= 1 for a in accs)
             for curve in row["curves"].values() for accs in curve.values())
  assert 0 <= row["zero_shot"] <= 1 and set(row["prompt_separation"]) == {
      "leave_one_template_out", "mean_cosine_between_classes", "max_cosine_between_classes"}
  assert row["strata"]["counts"] == [12, 12]            # lamps of 4 and 6 px, half each
  assert {a["tower"] for a in results["audit"]} == {"clip_gelu_random", "clip_gelu_clip_gelu"}
  assert set(results["audit"][0]["transforms"]) == {
      "shift1p_cyclic", "shift1p_edge", "shift0.5p_cyclic", "shift0.5p_edge", "rot90", "rot180",
      "rot270"}
  assert len(results["placement"][0]["accuracy"]) == 4
  assert [(r["tower"], r["method"]) for r in results["recovery"]] == [
      ("clip_gelu_random", "lastblock"), ("clip_gelu_clip_gelu", "lastblock")]
  assert all(len(r["test_acc"]) == 2 for r in results["recovery"])
  for name in ("results.md", "layers.png", "label_curves.png"):
    assert os.path.isfile(os.path.join(workdir, name))
  assert output.strip().splitlines()[-1] == os.path.join(workdir, "results.md")


def test_rerun_reuses_every_row(smoke):
  workdir, _ = smoke
  rows = sorted(os.listdir(os.path.join(workdir, "rows")))
  mtimes = [os.path.getmtime(os.path.join(workdir, "rows", r)) for r in rows]
  proc = cli.popen("pretrained", f"--flagfile={SMOKE}", f"--workdir={workdir}", "--recovery=")
  _, err = proc.communicate(timeout=600)
  assert proc.returncode == 2 and "different flags (recovery)" in err    # identity contract
  proc = cli.popen("pretrained", f"--flagfile={SMOKE}", f"--workdir={workdir}")
  _, err = proc.communicate(timeout=600)
  assert proc.returncode == 0, err[-2000:]
  assert [os.path.getmtime(os.path.join(workdir, "rows", r)) for r in rows] == mtimes


def one_block_siglip(tmp_path) -> str:
  """A tower-config file: the SigLIP fixture's architecture cut to one narrow block per tower (the
  random-init runs compile its init, which costs with every block)."""
  with open(f"{FIXTURES}siglip_config.json") as f:
    tower = json.load(f)
  tower["embed_dim"] = 8
  for side in ("vision", "text"):
    tower[side].update(layers=1, width=8, heads=1, mlp_dim=8)
  path = tmp_path / "siglip_config.json"
  path.write_text(json.dumps(tower))
  return str(path)


def test_random_init_default_says_it_is_not_pretrained(tmp_path):
  cfg = pc.PretrainedConfig(checkpoints=(f"{one_block_siglip(tmp_path)}=random",), frame_size=32,
                            num_train=12, num_test=8, seeds=(0,), label_sizes=(12,),
                            contexts=(1.0,), greyscale=False, audit_examples=0, placement_grid=0,
                            dtype="bfloat16", batch_size=4, workdir=str(tmp_path / "w"))
  from experiments import pretrained
  pretrained.main(cfg)
  with open(tmp_path / "w" / "results.json") as f:
    results = json.load(f)
  assert results["pretrained_weights"] is False and "NOT pretrained" in results["note"]
  assert "NOT pretrained" in (tmp_path / "w" / "results.md").read_text()
  row = results["towers"][0]
  assert "zero_shot" not in row                          # no SentencePiece file given
  assert "block0_cls" not in row["curves"] and "block0_box" in row["curves"]   # SigLIP: no class token


@pytest.mark.parametrize("args,match", [
    (["--checkpoints=ViT-Q-1=random"], "--checkpoints=ViT-Q-1=random: unknown architecture"),
    (["--checkpoints=ViT-B-32=/nonexistent.safetensors"], "no such weights file"),
    (["--checkpoints=ViT-B-32"], "allowed: ARCH=PATH or ARCH=random"),
    (["--templates=a photo"], "--templates=a photo: allowed: templates with exactly one {}"),
    (["--audit_examples=500"], "--audit_examples=500: allowed: <= --num_test=150"),
    (["--lamp_sizes=7"], "--lamp_sizes=7"),
    (["--recovery=magic"], "--recovery=magic"),
    (["--num_train=" + "9" * 30], "--num_train=" + "9" * 30 + ": needs an estimated"),
    (["--recovery_steps=" + "9" * 30], "--recovery_steps=" + "9" * 30 + ": allowed"),
])
def test_bad_flags_are_one_line(args, match):
  message = cli.flag_error(pc.PretrainedConfig, "--workdir=/tmp/x", *args)
  assert match in message and "\n" not in message


def test_weights_that_do_not_fit_stop_before_any_work(tmp_path):
  workdir = tmp_path / "w"
  proc = cli.popen("pretrained", f"--flagfile={SMOKE}", f"--workdir={workdir}",
                   f"--checkpoints={FIXTURES}clip_gelu_config.json={FIXTURES}siglip.npz")
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 2
  assert err.strip().splitlines()[-1].startswith("error: checkpoint tests/fixtures/pretrained/siglip.npz "
                                                "does not fit the given clip config: missing keys")
  assert not workdir.exists()


def test_detection_dataset_boxes_through_mock_data():
  with tfds.testing.mock_data(num_examples=6):
    data = sources.load_boxes("voc/2007", split="train", limit=9, frame_size=32)
  assert data.images.shape[1:] == (32, 32, 3) and data.images.dtype == np.uint8
  assert len(data.images) == len(data.boxes) == len(data.labels) <= 9
  assert np.all((data.boxes[:, 2] > data.boxes[:, 0]) & (data.boxes[:, 3] > data.boxes[:, 1]))
  assert len(data.class_names) == 20                   # VOC's classes, from the features
  with tfds.testing.mock_data(num_examples=2), pytest.raises(ValueError, match="box_key='boxes'"):
    sources.load_boxes("voc/2007", split="train", box_key="boxes")


def test_classification_dataset_through_mock_data():
  cfg = pc.PretrainedConfig(dataset="mnist", num_train=20, num_test=10, workdir="/tmp/unused")
  with tfds.testing.mock_data(num_examples=20):
    data = pretrained_data.load(cfg)
  assert data.train_images.shape == (20, 28, 28, 3) and data.frame_size == 28
  assert data.class_names == tuple(str(i) for i in range(10))        # mnist's ClassLabel names
  np.testing.assert_array_equal(data.train_boxes, np.tile([[0, 0, 1, 1]], (20, 1)))
  assert cfg.views == [("frame", 0.0, False), ("frame_grey", 0.0, True)]   # no boxes: whole image


def test_whole_study_on_a_mocked_detection_dataset(tmp_path):
  """The box-crop path end to end: mocked VOC boxes, the tiny CLIP fixture and its tokenizer."""
  from experiments import pretrained
  cfg = pc.PretrainedConfig(
      checkpoints=(f"{FIXTURES}clip_gelu_config.json={FIXTURES}clip_gelu.safetensors",),
      tokenizer=f"{FIXTURES}bpe_vocab_head.txt.gz", dataset="voc/2007", box_key="objects/bbox",
      label_key="objects/label", train_split="train", test_split="validation", frame_size=48,
      num_train=16, num_test=8, seeds=(0,), label_sizes=(16,), contexts=(0.0, 1.0), greyscale=False,
      audit_examples=8, placement_grid=2, recovery=("lpft",), recovery_steps=1,
      recovery_batch_size=8, batch_size=8, workdir=str(tmp_path / "w"))
  with tfds.testing.mock_data(num_examples=8):
    pretrained.main(cfg)
  with open(tmp_path / "w" / "results.json") as f:
    results = json.load(f)
  assert len(results["class_names"]) == 20 and results["views"] == ["frame", "tight"]
  row = next(r for r in results["towers"] if r["tower"] == "clip_gelu_clip_gelu" and r["view"] == "tight")
  assert 0 <= row["zero_shot"] <= 1 and "block1_box" in row["curves"]
  lpft = [r for r in results["recovery"] if r["method"] == "lpft"]
  assert len(lpft) == 2 and all(0 <= a <= 1 for r in lpft for a in r["test_acc"])


def test_tuning_methods_train_what_they_say():
  import jax
  from experiments import pretrained_tuning
  params = {"params": {"visual": {"encoder": {"block_0": {"w": 0}, "block_1": {"w": 0}},
                                  "ln_post": {"scale": 0}, "patch_embed": {"kernel": 0}},
                       "head": {"kernel": 0}}}
  labels = jax.tree_util.tree_leaves_with_path(pretrained_tuning.trainable("lastblock", params, 2))
  trained = {jax.tree_util.keystr(p) for p, v in labels if v == "train"}
  assert trained == {"['params']['visual']['encoder']['block_1']['w']",
                     "['params']['visual']['ln_post']['scale']", "['params']['head']['kernel']"}
  everything = pretrained_tuning.trainable("finetune", params, 2)
  assert set(jax.tree.leaves(everything)) == {"train"}


def test_a_tokenizer_of_the_wrong_family_stops_before_any_work(tmp_path):
  from experiments import config, pretrained
  cfg = pc.PretrainedConfig(checkpoints=(f"{one_block_siglip(tmp_path)}=random",),
                            tokenizer=f"{FIXTURES}bpe_vocab_head.txt.gz", frame_size=32,
                            num_train=12, num_test=8, workdir=str(tmp_path / "w"))
  with pytest.raises(config.FlagError, match="allowed for SigLIP towers: a SentencePiece .model"):
    pretrained.main(cfg)
  assert not (tmp_path / "w").exists()
