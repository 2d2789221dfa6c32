"""The suppression study's rows: one model (CLIP), its optimizers, one seed's data and start tower
at a time, and how a start row and a continuation row are made (``experiments.contrastive_suppression``
runs them through ``runner.run_all``)."""
from __future__ import annotations

import os

import numpy as np
import optax

from experiments import caption_towers as towers
from experiments import contrastive_suppression_report as report_lib
from experiments import runner
from experiments import workdir as workdir_lib
from experiments.contrastive_suppression_config import (CONTINUE_STREAM, Continuation, StartRun,
                                                        SuppressionConfig)
from invariance import contrastive_optim
from invariance import dashcam
from invariance import dual_encoder as de
from invariance import train
from invariance.data import captions as captions_lib
from invariance.data import pipeline


def _checkpoint_steps(directory: str) -> list[int]:
  """The steps of the checkpoints ``train.fit`` finished in ``directory`` (none: [])."""
  return [int(d) for d in os.listdir(directory) if d.isdigit()] if os.path.isdir(directory) else []


class Study:
  """One model (CLIP, ``--embed_dim``), its optimizers, one seed's data and start tower at a time
  (the runs come ordered by seed), and how each row is made."""

  def __init__(self, cfg: SuppressionConfig, workdir: workdir_lib.Workdir):
    self.cfg, self.workdir = cfg, workdir
    self.tokenizer = captions_lib.Tokenizer()
    self.model = de.Jitted(de.DualEncoder(self.tokenizer.vocab_size, cfg.embed_dim, "clip"),
                           dashcam.IMAGE_SIZE, self.tokenizer.max_len, cfg.batch_size)
    sched = lambda steps: optax.warmup_cosine_decay_schedule(0.0, cfg.learning_rate,
                                                             cfg.warmup_steps, steps)
    self.start_schedule, self.continue_schedule = sched(cfg.start_steps), sched(cfg.continue_steps)
    self.start_optimizer = contrastive_optim.make_optimizer(self.start_schedule)
    self.optimizers = {(wd, t): contrastive_optim.make_optimizer(self.continue_schedule, wd,
                                                                 t == "fixed")
                       for wd in cfg.weight_decays for t in cfg.temperatures}
    self._data, self._start = (None, None), (None, None)

  def data(self, seed: int, lamp_size: int) -> towers.Data:
    if self._data[0] != (seed, lamp_size):
      self._data = (seed, lamp_size), towers.Data(seed, self.cfg.data_dir, lamp_size)
    return self._data[1]

  def measure(self, params, data: towers.Data, mlp: bool) -> dict:
    return towers.measure(self.model, params, data, self.cfg.num_probe, self.cfg.num_pairs, mlp)

  def fit(self, params, data: towers.Data, p: float, steps: int, name: str, batch_seed: int,
          optimizer, schedule):
    cfg = self.cfg
    tcfg = train.TrainConfig(
        steps=steps, name=f"{name}/seed{data.seed}", log_every=cfg.log_every,
        checkpoint_every=cfg.checkpoint_every, **self.workdir.train_paths(name, data.seed, cfg))
    images = data.scenes(dashcam.TRAIN, cfg.num_train, "num_train")[0]
    return dashcam.fit_dual_encoder(self.model, params, images, data.captions(cfg.num_train, p),
                                    self.tokenizer, cfg.batch_size, batch_seed, optimizer, tcfg,
                                    schedule)

  def start(self, run: StartRun):
    """The start tower's params (the random tower, or it trained on p = 1 captions), made once."""
    if self._start[0] != run:
      data, params = self.data(run.seed, run.lamp_size), self.model.init(dashcam.init_key(run.seed))
      if run.start == "p1":
        params = self.fit(params, data, 1.0, self.cfg.start_steps, "start_" + run.name, run.seed,
                          self.start_optimizer, self.start_schedule)[0]
      self._start = run, params
    return self._start[1]

  def start_row(self, run: StartRun) -> dict:
    params, data = self.start(run), self.data(run.seed, run.lamp_size)
    return {"seed": run.seed, "start": run.start, "lamp_size": run.lamp_size,
            **self.measure(params, data, mlp=True),
            "zero_shot": towers.zero_shot(self.model, self.tokenizer, params, data,
                                          self.cfg.num_probe, run.start == "p1"),
            "log_scale": float(params["params"]["log_scale"])}

  def continuation_row(self, run: Continuation) -> dict:
    cfg, arm, data = self.cfg, run.arm, self.data(run.seed, run.arm.lamp_size)
    params, history, trace = self.start(run.tower), None, {}
    optimizer = self.optimizers[(arm.weight_decay, arm.temperature)]
    directory = self.workdir.checkpoint_dir(run.name, run.seed)
    for stop in [s for s in cfg.probe_steps if s > 0]:
      key, last = run.trace_key(stop), stop == cfg.continue_steps
      if not last and self.workdir.has_row(key):           # measured before a restart
        trace[str(stop)] = self.workdir.row(key, None)
        continue
      if not last and max(_checkpoint_steps(directory), default=0) > stop:
        params = train.load_params(directory, stop, self.model.zeros())   # trained past it
      else:
        params, history = self.fit(params, data, run.p, stop, run.name,
                                   run.seed + CONTINUE_STREAM, optimizer, self.continue_schedule)
      measured = lambda: self.measure(params, data, mlp=last)
      trace[str(stop)] = measured() if last else self.workdir.row(key, measured)
    captions = data.captions(cfg.num_train, run.p)
    mentioned = np.array([captions_lib.mentions(c, dashcam.LIGHT) for c in captions])
    seen = pipeline.visits(cfg.num_train, cfg.batch_size, run.seed + CONTINUE_STREAM,
                           cfg.continue_steps)
    return {"seed": run.seed, **arm.fields(), "p": run.p, **trace[str(cfg.continue_steps)],
            "trace": {k: {m: v[m] for m in ("probe", "sens_num", "sens_den", "sensitivity")}
                      for k, v in trace.items()},
            "zero_shot": towers.zero_shot(self.model, self.tokenizer, params, data, cfg.num_probe,
                                          arm.start == "p1" or run.p > 0),
            "exposures": int(seen[mentioned].sum()),
            "log_scale": float(params["params"]["log_scale"]),
            "final_loss": train.final_loss(history), "train_seconds": history["train_seconds"]}

  def run(self, run: StartRun | Continuation) -> runner.Run:
    if isinstance(run, StartRun):
      return runner.Run(run.key, lambda: self.start_row(run), report_lib.describe_start)
    return runner.Run(run.key, lambda: self.continuation_row(run), report_lib.describe)
