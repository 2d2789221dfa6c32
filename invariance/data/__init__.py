"""Data: a TFDS dataset (``sources``) -> curation (placement, rotation, captions) -> grain batches.

Submodules: ``sources`` (one loader per concept, all through ``tfds.data_source``: labelled images
by TFDS name or the offline ``digits``, and the dashcam scenes), ``tfds_builders`` (the offline
defaults as TFDS builders, built on first use), ``curation`` (placement supports, rotation policy,
in/out-of-support splits), ``scenes`` (the procedural dashcam scene generator), ``captions``
(caption policies, tokenizer), ``pipeline`` (grain: the global batch of every step).
tensorflow_datasets and grain are imported only when used; ``tfds_builders`` is imported on first
attribute access.
"""
import importlib

from invariance.data.captions import (ATTRIBUTE_WORDS, POLICIES, Tokenizer, all_captions,
                                      make_captions, mentions)
from invariance.data.curation import (COMPLEMENT, ROTATION_POLICIES, SUPPORTS, curated_splits,
                                      paste, place, placement_positions, rotate_curation,
                                      support_elements)
from invariance.data.pipeline import train_batch_fn, train_dataset
from invariance.data.scenes import (ATTRIBUTES, CAR_COLORS, Nuisance, attribute_boxes,
                                    make_scenes, render_scenes, sample_attributes,
                                    sample_nuisance, scene_layout, scene_pairs, with_attribute)
from invariance.data.sources import (ImageData, as_objects, load_classification, load_digits,
                                     load_scene_pairs, load_scenes, resize_objects)


def __getattr__(name):
  if name == "tfds_builders":
    return importlib.import_module("invariance.data.tfds_builders")
  raise AttributeError(f"module 'invariance.data' has no attribute {name!r}")
