"""Build datasets and models from a resolved config (absl FlagValues), and rebuild them from a model dir."""
from __future__ import annotations

import os

import tensorflow as tf

from vsep_tf import data as data_lib
from vsep_tf import priors as priors_lib
from vsep_tf.training import config as config_lib


def dataset_from_config(fv):
  """The dataset family named by --dataset, configured by the data flags."""
  name = fv.dataset
  kwargs = {}
  if name == "toy":
    kwargs = dict(seed=fv.toy_seed)
  elif name == "stems":
    if not fv.data_root:
      raise ValueError("--dataset=stems needs --data_root (a folder {train,test}/<track>/<source>.wav|flac)")
    kwargs = dict(root=fv.data_root, min_rms=fv.min_rms, gain_db=fv.gain_db)
    if "bad_audio" in fv:
      kwargs["bad_audio"] = fv.bad_audio
    if "valid_tracks" in fv and fv.valid_tracks:
      kwargs["valid_tracks"] = fv.valid_tracks
  elif name == "musdb":
    if not fv.musdb_root:
      raise ValueError("--dataset=musdb needs --musdb_root (MUSDB18 or MUSDB18-HQ; it cannot be downloaded here)")
    kwargs = dict(root=fv.musdb_root, is_wav=fv.musdb_is_wav, gain_db=fv.gain_db)
  if fv.sample_rate:
    kwargs["sample_rate"] = fv.sample_rate
  if fv.mix:
    kwargs["mix"] = fv.mix
  return data_lib.build_dataset(name, **kwargs)


def prior_from_config(fv):
  """One (unbuilt) prior of the family --prior with the '<family>.*' hyperparameters."""
  if fv.prior not in priors_lib.PRIORS:
    raise ValueError(f"unknown --prior={fv.prior!r}; choose from {sorted(priors_lib.PRIORS)}")
  return priors_lib.PRIORS[fv.prior](**config_lib.factory_kwargs(fv, fv.prior))


def build_priors(fv, source_names, length=None):
  """{source_name: prior}, variables created (called once on zeros of [1, length])."""
  length = length or fv.crop_length
  priors = {}
  for name in source_names:
    prior = prior_from_config(fv)
    if prior.has_log_prob:
      prior.log_prob(tf.zeros([1, length]), tf.zeros([1]))
    else:
      prior.score(tf.zeros([1, length]), tf.ones([1]))
    priors[name] = prior
  return priors


def restore_priors(model_dir: str):
  """(priors dict, config) rebuilt from a model directory's config.flags and its latest checkpoint."""
  fv = config_lib.load_config(model_dir)
  source_names = dataset_source_names(fv)
  priors = build_priors(fv, source_names)
  ckpt = tf.train.Checkpoint(priors=priors)
  path = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
  if path is None:
    raise FileNotFoundError(f"no checkpoint in {model_dir}/checkpoints")
  ckpt.restore(path).expect_partial().assert_existing_objects_matched()
  return priors, fv


def dataset_source_names(fv):
  return tuple(dataset_from_config(fv).source_names)
