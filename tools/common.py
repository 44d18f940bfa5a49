"""Helpers the repo tools share: the settings a tool reads a model's data set from."""
from __future__ import annotations

import os

from vsep_tf import config as config_lib
from vsep_tf import model_dir as model_dir_lib
from vsep_tf import run_flags


def model_data_config(model_dir: str, **changes) -> config_lib.Config:
  """The settings of `model_dir` with its data set: the run's config.flags (data paths included) for a training
  run directory, else its manifest (a shipped model names no data paths: pass e.g. data_root=... here).
  `changes` are set (added when the manifest leaves them out)."""
  if os.path.isfile(os.path.join(model_dir, run_flags.CONFIG_FILENAME)):
    cfg = run_flags.load_run_config(model_dir)
  else:
    cfg = model_dir_lib.load_config(model_dir)
  return config_lib.Config({**cfg.to_dict(), **changes})
