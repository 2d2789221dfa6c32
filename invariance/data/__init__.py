"""Data: base sources -> curation (placement, rotation, captions) -> grain batches per process.

Submodules: ``sources`` (sklearn digits offline, any TFDS name), ``curation`` (placement supports,
rotation policy, in/out-of-support splits), ``scenes`` (procedural dashcam scenes), ``captions``
(caption policies, tokenizer), ``pipeline`` (grain loaders), ``tfds_builders`` (the generated
datasets as TFDS builders). tensorflow_datasets and grain are imported only when used;
``tfds_builders`` is imported on first attribute access.
"""
import importlib

from invariance.data.captions import (ATTRIBUTE_WORDS, POLICIES, Tokenizer, all_captions,
                                      make_captions, mentions)
from invariance.data.curation import (COMPLEMENT, ROTATION_POLICIES, SUPPORTS, curated_splits,
                                      paste, place, placement_positions, rotate_curation,
                                      support_elements)
from invariance.data.pipeline import (eval_batches, num_eval_batches, shard_indices,
                                      train_batches)
from invariance.data.scenes import (ATTRIBUTES, CAR_COLORS, Nuisance, attribute_boxes,
                                    make_scenes, render_scenes, sample_attributes,
                                    sample_nuisance, scene_layout, scene_pairs, with_attribute)
from invariance.data.sources import (SOURCES, ImageData, load_digits, load_source, load_tfds,
                                     read_tfds)


def __getattr__(name):
  if name == "tfds_builders":
    return importlib.import_module("invariance.data.tfds_builders")
  raise AttributeError(f"module 'invariance.data' has no attribute {name!r}")
