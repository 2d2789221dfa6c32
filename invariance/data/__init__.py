"""Data: a TFDS dataset (``sources``) -> curation (placement, rotation, captions) -> grain batches.

Submodules: ``sources`` (one loader per concept, all through ``tfds.data_source``: labelled images
by TFDS name or the offline ``digits``, and the dashcam scenes), ``tfds_builders`` (the offline
defaults as TFDS builders, built on first use), ``curation`` (placement supports, rotation policy,
in/out-of-support splits), ``scenes`` (the procedural dashcam scene generator), ``captions``
(caption policies, tokenizer), ``pipeline`` (grain: the global batch of every step). Import the
submodule you need (``from invariance.data import sources``); tensorflow_datasets and grain are
imported only when used.
"""
