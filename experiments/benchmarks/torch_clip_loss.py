r"""open_clip's CLIP loss in torch, timed the way ``experiments.benchmarks.contrastive`` times the
lab's: forward + backward w.r.t. both embeddings and the logit scale, median wall time, float32,
on one device; 6 B^2 D FLOPs (the three B x B x D products). For the side-by-side GPU figures:

    python -m experiments.bench --suite=contrastive --loss_batches=8192,65536 --out=bench_loss_gpu.json
    python -m experiments.benchmarks.torch_clip_loss --batches=8192,65536 --out=bench_loss_torch.json

Needs torch (CUDA build) and open_clip_torch; neither is a dependency of the lab (the GPU host
installs them for this comparison only). Never run here: no GPU, no torch on the machines that
built this; the first GPU host to run it reports its numbers.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time


def time_clip_loss(batch: int, dim: int, repeats: int, device: str) -> dict:
  import open_clip
  import torch
  gen = torch.Generator(device=device).manual_seed(0)
  img = torch.nn.functional.normalize(torch.randn(batch, dim, device=device, generator=gen), dim=-1)
  txt = torch.nn.functional.normalize(torch.randn(batch, dim, device=device, generator=gen), dim=-1)
  img.requires_grad_(True)
  txt.requires_grad_(True)
  log_scale = torch.tensor(2.6592, device=device, requires_grad=True)      # ln(1 / 0.07)
  loss_fn = open_clip.loss.ClipLoss()

  def step():
    img.grad = txt.grad = log_scale.grad = None
    loss = loss_fn(img, txt, log_scale.exp())
    loss.backward()
    return loss

  sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
  for _ in range(2):
    step()
  sync()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    loss = step()
    sync()
    times.append(time.perf_counter() - start)
  flops = 6 * batch * batch * dim
  median = statistics.median(times)
  return {"loss": "open_clip ClipLoss (torch)", "batch": batch, "dim": dim,
          "value": float(loss), "median_s": median, "min_s": min(times), "repeats": repeats,
          "flops": flops, "flop_per_s": flops / median,
          "device": torch.cuda.get_device_name() if device.startswith("cuda") else device,
          "torch": torch.__version__, "open_clip": open_clip.__version__}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batches", default="8192,65536")
  parser.add_argument("--dim", type=int, default=256)
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--device", default="cuda")
  parser.add_argument("--out", required=True)
  args = parser.parse_args()
  rows = [time_clip_loss(int(b), args.dim, args.repeats, args.device)
          for b in args.batches.split(",")]
  with open(args.out, "w") as f:
    json.dump({"suite": "torch_clip_loss", "rows": rows}, f, indent=1)
  for r in rows:
    print(f"open_clip ClipLoss B={r['batch']} D={r['dim']}: {1e3 * r['median_s']:.2f} ms, "
          f"{r['flop_per_s'] / 1e12:.2f} TFLOP/s on {r['device']}")


if __name__ == "__main__":
  main()
