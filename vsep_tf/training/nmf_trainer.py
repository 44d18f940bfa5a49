"""--job=nmf: per-class KL-NMF dictionaries learnt from each class's solo train audio (separators/nmf.py).

NMFTrainer(cfg, strategy).train() -> metrics. `strategy` is accepted for the trainer interface and unused
(numpy on the host). Keyword overrides replace nmf_hyperparameters() values (tests, experiments).
"""
from __future__ import annotations

import os
import time
from typing import Dict

from absl import logging

from vsep_tf import model_dir as model_dir_lib
from vsep_tf import registry
from vsep_tf.data.solo import solo_audio
from vsep_tf.separators.nmf import NMF_FILENAME, NMFSeparator, learn_dictionaries, nmf_hyperparameters


class NMFTrainer:
  """Learns the per-class dictionaries of the data set's train split and saves them to <model_dir>/nmf.npz."""

  def __init__(self, cfg, strategy=None, **overrides):
    del strategy
    self.cfg = cfg
    self.model_dir = cfg.model_dir
    if not self.model_dir:
      raise ValueError("--model_dir is required")
    self.params = nmf_hyperparameters(**registry.factory_kwargs(cfg, "nmf"))
    unknown = set(overrides) - set(self.params)
    if unknown:
      raise ValueError(f"unknown NMF settings {sorted(unknown)}; known: {sorted(self.params)}")
    self.params.update(overrides)
    self.params = nmf_hyperparameters(**self.params)
    self.data = registry.dataset_from_config(cfg)
    self.source_names = tuple(self.data.source_names)

  def train(self) -> Dict[str, float]:
    p = self.params
    t0 = time.perf_counter()
    solo = solo_audio(self.data, "train", p["max_train_seconds"])
    t_read = time.perf_counter() - t0
    dictionaries, info = learn_dictionaries(solo, num_atoms=p["num_atoms"],
                                            n_fft=p["n_fft"], hop=p["hop"], iterations=p["train_iterations"],
                                            max_frames=p["max_train_frames"], seed=self.cfg.seed)
    separator = NMFSeparator(dictionaries, self.source_names, self.data.sample_rate, self.data.mix,
                             n_fft=p["n_fft"], hop=p["hop"], iterations=p["separate_iterations"],
                             power=p["mask_power"], seed=self.cfg.seed)
    metrics = {f"kl/{name}": v["kl"] for name, v in info.items()}
    metrics.update({f"frames/{name}": v["frames"] for name, v in info.items()})
    metrics["read_seconds"] = t_read
    metrics["seconds"] = time.perf_counter() - t0
    model_dir_lib.write_manifest(self.model_dir, self.cfg, self.source_names, self.data.sample_rate, self.data.mix)
    separator.save(os.path.join(self.model_dir, NMF_FILENAME), extra={**metrics, **p})
    logging.info("NMF dictionaries for %s saved to %s (%.1f s)", list(self.source_names),
                 os.path.join(self.model_dir, NMF_FILENAME), metrics["seconds"])
    return metrics
