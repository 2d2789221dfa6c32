"""Make the pretrained-tower test fixtures from random-weight open_clip models (the oracle).

Run in a separate virtual environment, never needed at run time or in CI (the outputs are
committed under tests/fixtures/pretrained/):

  python3 -m venv /tmp/oracle && /tmp/oracle/bin/pip install torch==2.14.1 torchvision==0.29.1 \
      open_clip_torch safetensors sentencepiece
  /tmp/oracle/bin/python scripts/make_pretrained_fixtures.py --out tests/fixtures/pretrained

Writes, all small:
* clip_{gelu,quick_gelu}.safetensors: tiny open_clip CLIP models (every parameter moved away from
  its init), float64, in open_clip's state-dict layout; siglip.npz: random arrays in big_vision's
  SigLIP layout (image blocks one by one, text blocks scanned), loaded into open_clip's SigLIP with
  ``load_big_vision_weights`` (vision trunk built with tanh-GELU as big_vision trains it);
* <name>_io.npz: inputs (images NHWC, token ids) and float64 reference outputs: embeddings, the
  pre-projection features, every block's tokens; <name>_config.json: the lab's architecture config;
* vit_b_32_layout.json: key names and shapes of the full-size open_clip ViT-B-32 (no weights);
* bpe_vocab_head.txt.gz (the first 1,000 merges of open_clip's BPE file; the tiny CLIP models'
  vocabulary is exactly its ids, so the fixtures also serve as a whole model with its tokenizer)
  and clip_tokens.json: texts and
  open_clip ``SimpleTokenizer`` ids at two context lengths;
* spm_tiny.model and siglip_tokens.json: a tiny SentencePiece model trained here (the tiny SigLIP's
  vocabulary) and the ids of
  open_clip's ``canonicalize`` cleaning, then the sentencepiece package's segmentation, then
  big_vision's sticky end-of-sequence (id 1) and padding with 1. (open_clip's own ``HFTokenizer``
  needs a Hugging Face T5 tokenizer; transformers 5's T5Tokenizer, built from this model file,
  mapped every word to <unk>, so it could not serve as the oracle.)
"""
import argparse
import gzip
import json
import os
import tempfile

import numpy as np
import open_clip
import safetensors.numpy
import timm
import torch

WIDTH, LAYERS, HEADS, EMBED, IMAGE, PATCH, CONTEXT = 32, 2, 2, 16, 32, 8, 12
MERGES = 1000                 # BPE merges kept in the fixture vocabulary
CLIP_VOCAB = 512 + MERGES + 2 # bytes, bytes + </w>, merges, start / end of text: the BPE's own ids
N = 3


def perturb(model, rng):
  with torch.no_grad():
    for p in model.parameters():
      p.add_(torch.from_numpy(rng.normal(0.0, 0.2, p.shape)).to(p.dtype))


def tokens(rng, low, high, eot, sot=None, pad=0):
  """Rows of ids in [low, high) of lengths CONTEXT, 5 and 8, ending in ``eot``, then ``pad``."""
  ids = np.full((N, CONTEXT), pad, np.int64)
  for row, length in enumerate((CONTEXT, 5, 8)):
    body = rng.integers(low, high, length)
    if sot is not None:
      body[0] = sot
    body[-1] = eot
    ids[row, :length] = body
  return ids


def lab_config(family, activation, eps, vocab):
  mlp = 4 * WIDTH
  return {"family": family, "embed_dim": EMBED if family == "clip" else WIDTH, "activation": activation,
          "ln_eps": eps,
          "vision": dict(image_size=IMAGE, patch_size=PATCH, width=WIDTH, layers=LAYERS, heads=HEADS,
                         mlp_dim=mlp),
          "text": dict(vocab_size=vocab, context_length=CONTEXT, width=WIDTH, layers=LAYERS, heads=HEADS,
                       mlp_dim=mlp)}


def save_io(out, name, images, ids, ref, config):
  np.savez(os.path.join(out, f"{name}_io.npz"), images_NHWC=images.transpose(0, 2, 3, 1), tokens=ids,
           **{k: v.detach().numpy() for k, v in ref.items()})
  with open(os.path.join(out, f"{name}_config.json"), "w") as f:
    json.dump(config, f, indent=1)


def clip_fixture(out, quick, rng):
  model = open_clip.model.CLIP(
      EMBED, open_clip.model.CLIPVisionCfg(layers=LAYERS, width=WIDTH, head_width=WIDTH // HEADS,
                                           image_size=IMAGE, patch_size=PATCH),
      open_clip.model.CLIPTextCfg(context_length=CONTEXT, vocab_size=CLIP_VOCAB, width=WIDTH, heads=HEADS,
                                  layers=LAYERS), quick_gelu=quick).double().eval()
  perturb(model, rng)
  images = rng.normal(size=(N, 3, IMAGE, IMAGE))
  ids = tokens(rng, 1, CLIP_VOCAB - 2, eot=CLIP_VOCAB - 1, sot=CLIP_VOCAB - 2)
  with torch.no_grad():
    x, t = torch.from_numpy(images), torch.from_numpy(ids)
    both = model.forward_intermediates(x, t, image_output_fmt="NLC", image_output_extra_tokens=True)
    proj, model.visual.proj = model.visual.proj, None
    pre = model.visual(x)
    model.visual.proj = proj
    ref = {"image_embedding": model.encode_image(x), "image_pre_projection": pre,
           "text_embedding": model.encode_text(t),
           "image_class_tokens": torch.stack([p[:, 0] for p in both["image_intermediates_prefix"]]),
           "image_patch_tokens": torch.stack(both["image_intermediates"]),
           "text_tokens": torch.stack(both["text_intermediates"]),
           "logit_scale": model.logit_scale.exp()}
  name = "clip_quick_gelu" if quick else "clip_gelu"
  safetensors.numpy.save_file({k: v.numpy() for k, v in model.state_dict().items()},
                              os.path.join(out, f"{name}.safetensors"))
  save_io(out, name, images, ids, ref,
          lab_config("clip", "quick_gelu" if quick else "gelu", 1e-5, CLIP_VOCAB))


def big_vision_arrays(rng, vocab):
  w, mlp, hd = WIDTH, 4 * WIDTH, WIDTH // HEADS
  r = lambda *shape: rng.normal(0.0, 0.3, shape)  # noqa: E731
  arrays = {"params/t": r(1), "params/b": r(1)}

  def block(prefix, lead=()):
    for ln in ("LayerNorm_0", "LayerNorm_1"):
      arrays[f"{prefix}{ln}/scale"] = 1 + r(*lead, w)
      arrays[f"{prefix}{ln}/bias"] = r(*lead, w)
    mha = prefix + "MultiHeadDotProductAttention_0/"
    for n in ("query", "key", "value"):
      arrays[f"{mha}{n}/kernel"] = r(*lead, w, HEADS, hd)
      arrays[f"{mha}{n}/bias"] = r(*lead, HEADS, hd)
    arrays[f"{mha}out/kernel"] = r(*lead, HEADS, hd, w)
    arrays[f"{mha}out/bias"] = r(*lead, w)
    arrays[f"{prefix}MlpBlock_0/Dense_0/kernel"] = r(*lead, w, mlp)
    arrays[f"{prefix}MlpBlock_0/Dense_0/bias"] = r(*lead, mlp)
    arrays[f"{prefix}MlpBlock_0/Dense_1/kernel"] = r(*lead, mlp, w)
    arrays[f"{prefix}MlpBlock_0/Dense_1/bias"] = r(*lead, w)

  img = "params/img/"
  arrays[img + "embedding/kernel"] = r(PATCH, PATCH, 3, w)
  arrays[img + "embedding/bias"] = r(w)
  arrays[img + "pos_embedding"] = r(1, (IMAGE // PATCH) ** 2, w)
  for i in range(LAYERS):
    block(f"{img}Transformer/encoderblock_{i}/")
  arrays[img + "Transformer/encoder_norm/scale"] = 1 + r(w)
  arrays[img + "Transformer/encoder_norm/bias"] = r(w)
  arrays[img + "MAPHead_0/probe"] = r(1, 1, w)
  block(img + "MAPHead_0/")
  del arrays[img + "MAPHead_0/LayerNorm_1/scale"], arrays[img + "MAPHead_0/LayerNorm_1/bias"]
  txt = "params/txt/"
  arrays[txt + "Embed_0/embedding"] = r(vocab, w)
  arrays[txt + "pos_embedding"] = r(1, CONTEXT, w)
  block(txt + "Encoder_0/encoderblock/", (LAYERS,))      # scanned: layer axis first
  arrays[txt + "Encoder_0/encoder_norm/scale"] = 1 + r(w)
  arrays[txt + "Encoder_0/encoder_norm/bias"] = r(w)
  arrays[txt + "head/kernel"] = r(w, w)
  arrays[txt + "head/bias"] = r(w)
  return arrays


def siglip_fixture(out, rng, vocab):
  text_cfg = dict(context_length=CONTEXT, vocab_size=vocab, width=WIDTH, heads=HEADS, layers=LAYERS,
                  no_causal_mask=True, proj_bias=True, pool_type="last", norm_kwargs={"eps": 1e-6},
                  act_kwargs={"approximate": "tanh"})
  model = open_clip.model.CustomTextCLIP(
      WIDTH, dict(timm_model_name="vit_base_patch16_siglip_224", timm_pool="map", timm_proj="none",
                  image_size=IMAGE, layers=LAYERS, width=WIDTH), text_cfg, init_logit_bias=-10.0)
  model.visual.trunk = timm.create_model(
      "vit_base_patch16_siglip_224", pretrained=False, num_classes=0, img_size=IMAGE, patch_size=PATCH,
      embed_dim=WIDTH, depth=LAYERS, num_heads=HEADS, act_layer="gelu_tanh")
  model = model.double().eval()
  arrays = big_vision_arrays(rng, vocab)
  path = os.path.join(out, "siglip.npz")
  np.savez(path, **arrays)
  with torch.no_grad():
    open_clip.convert.load_big_vision_weights(model, path)
  images = rng.normal(size=(N, 3, IMAGE, IMAGE))
  ids = tokens(rng, 2, vocab, eot=1, pad=1)
  trunk = model.visual.trunk
  with torch.no_grad():
    x, t = torch.from_numpy(images), torch.from_numpy(ids)
    blocks = trunk.forward_intermediates(x, output_fmt="NLC", intermediates_only=True)
    txt = model.text.forward_intermediates(t, output_fmt="NLC")
    ref = {"image_embedding": model.encode_image(x), "image_pre_projection": model.encode_image(x),
           "text_embedding": model.encode_text(t),
           "image_patch_tokens": torch.stack(blocks), "text_tokens": torch.stack(txt["text_intermediates"]),
           "logit_scale": model.logit_scale.exp(), "logit_bias": model.logit_bias}
  save_io(out, "siglip", images, ids, ref, lab_config("siglip", "gelu_tanh", 1e-6, vocab))


TEXTS = ["a photo of a red traffic light.", "A GREEN light, at night!!", "  spaces\tand\nnewlines  ",
         "digits 2026 and 3.14159", "naïve café — déjà vu", "日本語のテキスト", "emoji 🚦🚗 ok",
         "&amp; html &lt;b&gt; entities", "can't won't it's they're", "under_score and hy-phen",
         " ".join(["long"] * 100) + " end", "", "mixed CASE Words", "punctuation... ?!;:"]


def tokenizer_fixtures(out, rng) -> int:
  """Writes the tokenizer fixtures; returns the SentencePiece model's vocabulary size."""
  vocab = open_clip.tokenizer.default_bpe()
  with gzip.open(vocab, "rt", encoding="utf-8") as f:
    lines = f.read().split("\n")
  head = os.path.join(out, "bpe_vocab_head.txt.gz")
  with open(head, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
    f.write("\n".join(lines[:MERGES + 1]).encode("utf-8"))
  ref = {}
  for context in (77, 8):
    tok = open_clip.tokenizer.SimpleTokenizer(bpe_path=head, context_length=context)
    ref[str(context)] = tok(TEXTS).tolist()
  with open(os.path.join(out, "clip_tokens.json"), "w") as f:
    json.dump({"texts": TEXTS, "merges": MERGES, "ids": ref}, f)

  import sentencepiece as spm
  corpus = [open_clip.tokenizer.canonicalize_text(t) for t in TEXTS] + [
      " ".join(rng.choice(["red", "green", "light", "car", "traffic", "photo", "a", "of", "the", "night"],
                          8)) for _ in range(300)]
  with tempfile.TemporaryDirectory() as tmp:
    with open(os.path.join(tmp, "corpus.txt"), "w") as f:
      f.write("\n".join(corpus))
    prefix = os.path.join(out, "spm_tiny")
    spm.SentencePieceTrainer.train(
        input=os.path.join(tmp, "corpus.txt"), model_prefix=prefix, vocab_size=70, hard_vocab_limit=False,
        minloglevel=2, pad_id=0, eos_id=1, unk_id=2, bos_id=-1, character_coverage=1.0)
    os.remove(prefix + ".vocab")
    sp = spm.SentencePieceProcessor(model_file=prefix + ".model")
    clean = open_clip.tokenizer.get_clean_fn("canonicalize")
    ref = {}
    for context in (16, 6):
      rows = []
      for text in TEXTS:       # big_vision's tokenize(eos="sticky", pad_value=1)
        ids = (sp.encode(clean(text)) + [1])[:context]
        ids[-1] = 1
        rows.append(ids + [1] * (context - len(ids)))
      ref[str(context)] = rows
  with open(os.path.join(out, "siglip_tokens.json"), "w") as f:
    json.dump({"texts": TEXTS, "ids": ref}, f)
  return sp.get_piece_size()


def layout_fixture(out):
  model = open_clip.create_model("ViT-B-32", pretrained=None)
  layout = {k: list(v.shape) for k, v in model.state_dict().items()}
  with open(os.path.join(out, "vit_b_32_layout.json"), "w") as f:
    json.dump(layout, f, indent=0)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default="tests/fixtures/pretrained")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  os.makedirs(args.out, exist_ok=True)
  rng = np.random.default_rng(args.seed)
  torch.manual_seed(args.seed)
  spm_vocab = tokenizer_fixtures(args.out, rng)
  clip_fixture(args.out, False, rng)
  clip_fixture(args.out, True, rng)
  siglip_fixture(args.out, rng, spm_vocab)
  layout_fixture(args.out)
  total = sum(os.path.getsize(os.path.join(args.out, f)) for f in os.listdir(args.out))
  print(f"wrote {len(os.listdir(args.out))} files, {total / 1e6:.2f} MB, to {args.out}")


if __name__ == "__main__":
  main()
