"""The registries, in one neutral place: hyperparameter families and the data set a Config names.

FAMILIES maps a family name to the factory whose keyword arguments are its hyperparameters; each argument is
the setting '<family>.<argument>' (a flag `--<family>.<argument>` in the CLIs, typed from its default; see
vsep_tf/run_flags.py). `factory_kwargs(cfg, family)` reads them back from a Config. Model code holds no
flags and no global config: it gets explicit keyword arguments.

This module sits above priors, separators and data, and below training, model_dir and the CLIs.
"""
from __future__ import annotations

import inspect
from typing import Mapping

import tensorflow as tf

from vsep_tf import data as data_lib
from vsep_tf import priors as priors_lib
from vsep_tf.priors.harmonic import build_harmonic_prior
from vsep_tf.priors.spectral import build_spectral_prior
from vsep_tf.priors.spectral_flow import build_spectral_flow_prior
from vsep_tf.separators import encoder, harmonic, nmf, periodic
from vsep_tf.separators import spectral as spectral_search

# Factory arguments that are not model hyperparameters (Keras names; seeds come from the 'seed' setting).
NOT_HYPERPARAMETERS = ("name", "seed")


FAMILIES = {**priors_lib.PRIORS, "encoder": encoder.build_encoder, "nmf": nmf.nmf_hyperparameters,
            "periodic": periodic.periodic_hyperparameters, "spectral": build_spectral_prior,
            "spectral_search": spectral_search.spectral_search_hyperparameters,
            "spectral_encoder": spectral_search.build_spectral_encoder,
            "spectral_flow": build_spectral_flow_prior, "harmonic": build_harmonic_prior,
            "harmonic_encoder": harmonic.build_pitch_encoder,
            "harmonic_search": harmonic.harmonic_search_hyperparameters}
# The kinds of spectral prior (--spectral_prior) and the family whose factory builds each.
SPECTRAL_PRIOR_FAMILIES = {"vae": "spectral", "flow": "spectral_flow"}


def spectral_prior_family(cfg: Mapping) -> str:
  """The flag family of the spectral prior kind cfg['spectral_prior'] ('vae' when absent: older manifests)."""
  kind = cfg.get("spectral_prior", "vae") or "vae"
  if kind not in SPECTRAL_PRIOR_FAMILIES:
    raise ValueError(f"unknown spectral prior {kind!r}; choose from {sorted(SPECTRAL_PRIOR_FAMILIES)}")
  return SPECTRAL_PRIOR_FAMILIES[kind]


def build_spectral_priors(cfg: Mapping, source_names) -> dict:
  """{source name: SpectralPrior or SpectralFlowPrior} of the kind cfg['spectral_prior'], with its family's
  '<family>.*' hyperparameters."""
  family = spectral_prior_family(cfg)
  return {name: FAMILIES[family](**factory_kwargs(cfg, family)) for name in source_names}


def build_harmonic_priors(cfg: Mapping, source_names, sample_rate: int) -> dict:
  """{source name: HarmonicPrior} (not yet fitted) with the 'harmonic.*' hyperparameters of cfg."""
  return {name: build_harmonic_prior(sample_rate, **factory_kwargs(cfg, "harmonic")) for name in source_names}


def family_defaults(family: str) -> dict:
  """{'<family>.<arg>': default} for every hyperparameter of a family."""
  out = {}
  for name, param in inspect.signature(FAMILIES[family]).parameters.items():
    if (param.kind in (param.KEYWORD_ONLY, param.POSITIONAL_OR_KEYWORD) and param.default is not param.empty
        and name not in NOT_HYPERPARAMETERS):
      out[f"{family}.{name}"] = param.default
  return out


def factory_kwargs(cfg: Mapping, family: str) -> dict:
  """The keyword arguments for the factory of `family`, read from the settings '<family>.*' of `cfg`."""
  kwargs = {}
  for key, default in family_defaults(family).items():
    if key not in cfg:
      continue
    value = cfg[key]
    if isinstance(default, tuple):
      value = tuple(type(default[0])(v) if default else v for v in value)
    kwargs[key.split(".", 1)[1]] = value
  return kwargs


def prior_from_config(cfg: Mapping):
  """One (unbuilt) waveform prior of the family cfg['prior'] with its '<family>.*' hyperparameters."""
  if cfg["prior"] not in priors_lib.PRIORS:
    raise ValueError(f"unknown prior family {cfg['prior']!r}; choose from {sorted(priors_lib.PRIORS)}")
  return priors_lib.PRIORS[cfg["prior"]](**factory_kwargs(cfg, cfg["prior"]))


def dataset_from_config(cfg: Mapping):
  """The data set family named by cfg['dataset'], configured by the data settings."""
  name = cfg["dataset"]
  kwargs = {}
  if name == "toy":
    kwargs = dict(seed=cfg["toy_seed"])
  elif name == "stems":
    if not cfg.get("data_root"):
      raise ValueError("--dataset=stems needs --data_root (a folder {train,test}/<track>/<source>.wav|flac)")
    kwargs = dict(root=cfg["data_root"], min_rms=cfg["min_rms"], gain_db=cfg["gain_db"])
    if "bad_audio" in cfg:
      kwargs["bad_audio"] = cfg["bad_audio"]
    if cfg.get("valid_tracks"):
      kwargs["valid_tracks"] = cfg["valid_tracks"]
  elif name == "musdb":
    if not cfg.get("musdb_root"):
      raise ValueError("--dataset=musdb needs --musdb_root (MUSDB18 or MUSDB18-HQ; it cannot be downloaded here)")
    kwargs = dict(root=cfg["musdb_root"], is_wav=cfg["musdb_is_wav"], gain_db=cfg["gain_db"])
  if cfg.get("sample_rate"):
    kwargs["sample_rate"] = cfg["sample_rate"]
  if cfg.get("mix"):
    kwargs["mix"] = cfg["mix"]
  return data_lib.build_dataset(name, **kwargs)


def build_priors(cfg: Mapping, source_names, length=None) -> dict:
  """{source name: waveform prior}, variables created (called once on zeros of [1, length])."""
  length = length or cfg["crop_length"]
  priors = {}
  for name in source_names:
    prior = prior_from_config(cfg)
    if prior.has_log_prob:
      prior.log_prob(tf.zeros([1, length]), tf.zeros([1]))
    else:
      prior.score(tf.zeros([1, length]), tf.ones([1]))
    priors[name] = prior
  return priors
