"""Which config fields define a study's results, written out by hand (not derived from the
metadata ``config.identity`` reads): a field added, dropped or re-marked fails here until this list
is updated on purpose. A workdir is refused when any of these differ; the others are run options."""
import dataclasses
import importlib

import pytest

from experiments import config

SHARED = {"seeds", "prng_impl"}
CONVERGENCE = {"eval_every", "patience", "min_delta"}
RUN_OPTIONS = {"workdir", "data_dir", "log_every", "checkpoint_every", "compile_cache",
               "distributed", "coordinator_address", "num_processes", "process_id",
               "profile_steps", "heartbeat_timeout"}

RESULT_DEFINING = {
    ("experiments.orbit_config", "OrbitConfig"): SHARED | CONVERGENCE | {
        "dataset", "object_size", "channels", "group", "models", "canvas", "support",
        "placements_per_image", "steps", "model_steps", "batch_size", "learning_rate", "dtype",
        "mlp_hidden", "cnn_channels", "orbit_samples", "aug_width_regs", "aug_eval_samples",
        "warmup_steps", "val_fraction", "eval_elements", "eval_examples", "map_examples",
        "jensen_batches", "data_seed"},
    ("experiments.contrastive_config", "ContrastiveConfig"): SHARED | {
        "losses", "dtype", "mention_probs", "embed_dims", "attribute", "policies", "lamp_sizes",
        "duplicate_captions", "steps", "probe_steps", "trace_probs", "batch_size",
        "learning_rate", "warmup_steps", "num_train", "num_probe", "num_pairs"},
    ("experiments.recover_config", "RecoverConfig"): SHARED | CONVERGENCE | {
        "methods", "n_labels", "references", "pretrained_workdir", "loss", "embed_dim",
        "num_train", "contrastive_batch_size", "pretrain_steps", "pretrain_learning_rate",
        "pretrain_warmup_steps", "recaption_starts", "recaption_fractions", "recaption_steps",
        "recaption_learning_rate", "recaption_warmup_steps", "learning_rates", "tune_steps",
        "tune_batch_size", "val_fraction", "num_test", "target_acc"},
    ("experiments.pretrained_config", "PretrainedConfig"): SHARED | {
        "checkpoints", "tokenizer", "dataset", "label_key", "box_key", "train_split",
        "test_split", "attribute", "lamp_sizes", "frame_size", "num_train", "num_test",
        "contexts", "greyscale", "label_sizes", "class_names", "templates", "size_strata",
        "audit_examples", "audit_shifts", "placement_grid", "placement_scale", "recovery",
        "recovery_steps", "recovery_learning_rate", "recovery_batch_size", "dtype"},
    ("experiments.caption_stats_config", "CaptionStatsConfig"): {
        "prng_impl", "dataset", "splits", "limit", "caption_feature", "box_feature",
        "label_feature", "box_label", "area_edges", "caption_files", "caption_column",
        "mention_pattern", "colour_pattern", "colour_window", "interval"},
    ("experiments.contrastive_suppression_config", "SuppressionConfig"): SHARED | {
        "embed_dim", "batch_size", "num_train", "num_probe", "num_pairs", "starts",
        "lamp_sizes", "weight_decays", "temperatures", "start_steps", "continue_steps",
        "probe_steps", "learning_rate", "warmup_steps"},
    ("experiments.contrastive_losses_config", "LossesConfig"): SHARED | {
        "embed_dim", "batch_size", "num_train", "num_probe", "num_pairs", "selection_seeds",
        "losses", "learning_rates", "mention_probs", "siglip_bias_init", "lamp_size", "steps",
        "warmup_steps", "num_validation"},
}
# Run options beyond the shared ones: they change speed or float summation order, never what is
# computed (the contrastive loss's tiling threshold, the pretrained study's feature batch) or, for
# caption statistics, seeds (nothing there is random).
EXTRA_RUN_OPTIONS = {"ContrastiveConfig": {"tiled_threshold"}, "PretrainedConfig": {"batch_size"},
                     "CaptionStatsConfig": {"seeds"}}


@pytest.mark.parametrize("where", sorted(RESULT_DEFINING), ids=lambda w: w[1])
def test_result_defining_fields_are_the_listed_ones(where):
  cls = getattr(importlib.import_module(where[0]), where[1])
  assert set(config.identity(cls())) == RESULT_DEFINING[where]
  fields = {f.name for f in dataclasses.fields(cls) if f.init}
  assert fields - RESULT_DEFINING[where] == RUN_OPTIONS | EXTRA_RUN_OPTIONS.get(where[1], set())


def test_a_run_option_leaves_the_identity_and_a_listed_field_changes_it():
  """Control: the identity is what the lists say it is, in both directions."""
  from experiments.orbit_config import OrbitConfig
  base = OrbitConfig()
  assert config.identity(dataclasses.replace(base, log_every=7)) == config.identity(base)
  assert config.identity(dataclasses.replace(base, min_delta=0.01)) != config.identity(base)
