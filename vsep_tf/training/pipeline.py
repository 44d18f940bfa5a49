"""--job=spectral_separator: everything the working separator needs, trained into ONE model directory.

  stage 1  priors   one spectral VAE prior per source class from its SOLO train audio -> <model_dir>/priors
                    (SpectralPriorTrainer; --prior_steps, --prior_batch_size frames per class, --prior_learning_rate)
  stage 2  encoder  the amortised encoder on training MIXES alone by the frozen priors' ELBO -> <model_dir>
                    (SpectralEncoderTrainer; --train_steps, --batch_size mixes of --crop_length, --learning_rate)

Each stage checkpoints and resumes on its own: re-running the same command after a kill continues the stage
that was running (a finished stage is skipped). The finished directory's manifest names the priors as a
component, so it loads anywhere as one separator (model_dir.load_separator).
"""
from __future__ import annotations

import os

from absl import logging

from vsep_tf import model_dir as model_dir_lib
from vsep_tf.training.spectral_trainer import SpectralEncoderTrainer, SpectralPriorTrainer


class SpectralSeparatorPipeline:
  """The two stages above, under one strategy. `train()` -> the last stage's metrics (priors' with 'priors/')."""

  def __init__(self, cfg, strategy=None):
    if not cfg.model_dir:
      raise ValueError("--model_dir is required")
    self.cfg, self.strategy = cfg, strategy
    self.model_dir = cfg.model_dir
    self.prior_dir = os.path.join(cfg.model_dir, model_dir_lib.PRIORS_SUBDIR)
    # The stage being (or last) trained. Stage 1 is built here, as every trainer builds its data in __init__:
    # bad data settings (a missing --data_root) fail before vsep_tf.train writes config.flags.
    self.trainer = SpectralPriorTrainer(self.stage_configs()[0], strategy)

  def stage_configs(self):
    """(priors stage Config, encoder stage Config)."""
    cfg = self.cfg
    priors = cfg.replace(job="spectral", model_dir=self.prior_dir, train_steps=cfg.prior_steps,
                         batch_size=cfg.prior_batch_size, learning_rate=cfg.prior_learning_rate)
    encoder = cfg.replace(job="spectral_encoder", prior_dir=self.prior_dir)
    return priors, encoder

  def train(self) -> dict:
    priors_cfg, encoder_cfg = self.stage_configs()
    logging.info("stage 1/2: spectral priors -> %s (%d steps)", self.prior_dir, priors_cfg.train_steps)
    if not isinstance(self.trainer, SpectralPriorTrainer):
      self.trainer = SpectralPriorTrainer(priors_cfg, self.strategy)
    prior_metrics = self.trainer.train()
    logging.info("stage 2/2: amortised encoder on mixes alone -> %s (%d steps)", self.model_dir,
                 encoder_cfg.train_steps)
    self.trainer = SpectralEncoderTrainer(encoder_cfg, self.strategy)
    metrics = self.trainer.train()
    return {**{f"priors/{k}": v for k, v in prior_metrics.items()}, **metrics}

  @property
  def step(self):
    return self.trainer.step

  @property
  def is_chief(self) -> bool:
    return self.trainer.is_chief if self.trainer is not None else True

  def weights_checksum(self) -> str:
    return self.trainer.weights_checksum()
