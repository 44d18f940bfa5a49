r"""Model directories: the manifest, restoring what they hold, and `load_separator`.

A model directory is a self-describing artefact:

    <model_dir>/manifest.json     what it is (below); all `load_separator` reads besides the weights
    <model_dir>/checkpoints/      the weights (tf.train.Checkpoint), or nmf.npz for an NMF model
    <model_dir>/priors/           a spectral_encoder's frozen priors: a model directory of its own
    <model_dir>/config.flags      (training runs only) the full flagfile of the run that made it

manifest.json (format 'vsep-tf model', version 1):

    {"format": "vsep-tf model", "version": 1,
     "separator": "spectral_encoder",             # how it separates (informative; the job decides)
     "source_names": ["violin", ...], "sample_rate": 16000, "mix": "sum",
     "settings": {"job": "spectral_encoder", "spectral.n_fft": 1024, "spectral_search.iterations": 300, ...},
     "components": {"priors": "priors"}}         # other model directories it uses, relative to this one

`settings` holds the hyperparameters in use (every model family's '<family>.<arg>', the separator's search
settings, the data settings that define the source classes), never data paths, hosts, strategies or debug
settings (MANIFEST_EXCLUDED). Nothing is read from a data set or the working directory: a copy of the folder
anywhere loads the same separator. Training writes the manifest with every checkpoint; `tools.ship_model`
copies a directory with it (and its components) for shipping.
"""
from __future__ import annotations

import json
import os
from typing import Mapping, Sequence

import tensorflow as tf

from vsep_tf import config as config_lib
from vsep_tf import registry
from vsep_tf.separators.base import Separator

MANIFEST_FILENAME = "manifest.json"
MANIFEST_FORMAT = "vsep-tf model"
MANIFEST_VERSION = 1
LEGACY_CONFIG_FILENAME = "config.flags"
PRIORS_SUBDIR = "priors"
# Run settings that never go into a manifest: paths, cluster, strategy, debugging aids.
MANIFEST_EXCLUDED = ("model_dir", "data_root", "musdb_root", "prior_dir", "teacher_dir", "init_from",
                     "worker_hosts", "task_index", "collective_timeout_seconds", "strategy", "num_cpu_devices",
                     "debug_nan_at_step", "bad_audio", "audio_summary_seconds")


# Quality presets of load_separator: 'best' is the model's saved settings; the others cap the settings listed
# here for its kind (a separator kind not listed has one setting, the same for all). A spectral separator with an
# amortised encoder: 'fast' is the encoder's one forward pass, 'balanced' at most 50 of its MAP fit's Adam
# iterations (docs/results.md, "Quality presets": chosen on held-out train tracks, and what each costs).
QUALITIES = ("fast", "balanced", "best")
PRESET_ITERATIONS = {"spectral_encoder": {"fast": 0, "balanced": 50}}
# MISI rounds after the masks: none in 'fast' (10 rounds triple the one pass's time on the chorales; the fit's
# time grows by a few per cent).
PRESET_PHASE_ITERATIONS = {"spectral_encoder": {"fast": 0}}


class ModelDirError(ValueError):
  """A folder that is not a loadable model directory (missing, old, or unknown manifest)."""


def separator_kind(settings: Mapping) -> str:
  """How a model with these settings separates: langevin, periodic, encoder, nmf, spectral, spectral_encoder,
  harmonic (harmonic_priors: the priors of one, which do not separate alone)."""
  job = settings["job"]
  if job == "priors":
    return settings.get("priors_search", "langevin")
  if job in ("variational", "supervised"):
    return "encoder"
  if job == "spectral_separator":
    return "spectral_encoder"
  if job == "harmonic_separator":
    return "harmonic"
  return job


def model_families(settings: Mapping) -> tuple:
  """The hyperparameter families (registry.FAMILIES) a model with these settings uses."""
  kind = separator_kind(settings)
  if kind in ("langevin", "periodic"):
    return settings["prior"], "periodic"
  if kind == "spectral":  # the family of its kind of prior (--spectral_prior: vae -> spectral, flow -> spectral_flow)
    return registry.spectral_prior_family(settings), "spectral_search"
  return {"encoder": ("encoder",), "nmf": ("nmf",), "spectral_encoder": ("spectral_encoder", "spectral_search"),
          "harmonic_priors": ("harmonic",), "harmonic": ("harmonic_encoder", "harmonic_search")}.get(kind, ())


# Run settings that only concern some kinds of model (by name prefix): left out of the others' manifests.
KIND_SETTINGS = {"langevin_": ("langevin", "periodic"), "priors_search": ("langevin", "periodic"),
                 "sigma_": ("langevin", "periodic"), "p_clean": ("langevin", "periodic"),
                 "elbo_": ("encoder",), "sleep_": ("encoder",), "distill_steps": ("encoder",),
                 "valid_examples": ("encoder",), "spectral_prior": ("spectral",), "prior_steps": ("spectral_encoder",),
                 "prior_batch_size": ("spectral_encoder",), "prior_learning_rate": ("spectral_encoder",),
                 "encoder_objective": ("spectral_encoder",)}


def manifest_settings(cfg: Mapping) -> dict:
  """The settings of `cfg` that belong in a manifest (JSON-ready: tuples become lists): the run settings the
  model's kind uses, no paths, cluster or debugging ones, and the hyperparameters of its families."""
  kind, families = separator_kind(cfg), model_families(cfg)
  out = {}
  for name, value in cfg.items():
    family = name.split(".", 1)[0] if "." in name else None
    kinds = next((k for prefix, k in KIND_SETTINGS.items() if name.startswith(prefix)), None)
    if (name in MANIFEST_EXCLUDED or (family is not None and family not in families)
        or (kinds is not None and kind not in kinds)):
      continue
    out[name] = list(value) if isinstance(value, tuple) else value
  return out


def write_manifest(model_dir: str, cfg: Mapping, source_names: Sequence[str], sample_rate: int, mix: str,
                   components: Mapping[str, str] = None) -> dict:
  """Writes <model_dir>/manifest.json atomically and returns it. `components`: name -> model directory
  (stored relative to model_dir when inside it)."""
  stored = {}
  for name, path in (components or {}).items():
    inside = os.path.relpath(os.path.abspath(path), os.path.abspath(model_dir))
    stored[name] = inside if not inside.startswith("..") else os.path.abspath(path)
  settings = manifest_settings(cfg)
  if settings.get("job") == "spectral_separator":
    settings["job"] = "spectral_encoder"  # the finished pipeline separates as its last stage
  manifest = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "separator": separator_kind(settings),
              "source_names": list(source_names), "sample_rate": int(sample_rate), "mix": str(mix),
              "settings": settings, "components": stored}
  config_lib.atomic_write_text(os.path.join(model_dir, MANIFEST_FILENAME),
                               json.dumps(manifest, indent=1, sort_keys=True) + "\n")
  return manifest


def read_manifest(model_dir: str) -> dict:
  """The manifest of a model directory; ModelDirError naming what to do if it is missing, old or unknown."""
  path = os.path.join(model_dir, MANIFEST_FILENAME)
  if not os.path.isdir(model_dir):
    raise ModelDirError(f"{model_dir}: no such model directory")
  if not os.path.isfile(path):
    if os.path.isfile(os.path.join(model_dir, LEGACY_CONFIG_FILENAME)):
      raise ModelDirError(
          f"{model_dir} was written by an older vsep-tf (config.flags, no {MANIFEST_FILENAME}): write its "
          f"manifest with `python -m tools.ship_model --model_dir={model_dir} --output_dir=NEW_DIR` where its "
          "training data is reachable, then use NEW_DIR")
    raise ModelDirError(f"{model_dir} is not a vsep-tf model directory (no {MANIFEST_FILENAME})")
  try:
    with open(path, encoding="utf-8") as f:
      manifest = json.load(f)
  except (OSError, ValueError) as e:
    raise ModelDirError(f"{path}: unreadable manifest ({e})") from e
  if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
    raise ModelDirError(f"{path}: not a vsep-tf manifest (format {manifest.get('format')!r} if any)"
                        if isinstance(manifest, dict) else f"{path}: not a vsep-tf manifest")
  version = manifest.get("version")
  if version != MANIFEST_VERSION:
    raise ModelDirError(f"{path}: manifest version {version!r}; this vsep-tf reads version {MANIFEST_VERSION} "
                        "(upgrade vsep-tf for newer models; re-ship older ones with tools.ship_model)")
  missing = [k for k in ("source_names", "sample_rate", "mix", "settings") if k not in manifest]
  if missing:
    raise ModelDirError(f"{path}: manifest lacks {missing}")
  return manifest


def load_config(model_dir: str, overrides: Sequence[str] = ()) -> config_lib.Config:
  """The model's settings (manifest), with '--name=value' overrides applied. Hyperparameters its families
  gained after it was written take their defaults (the manifest's values win)."""
  try:
    return settings_config(read_manifest(model_dir)["settings"]).with_overrides(overrides)
  except (KeyError, ValueError) as e:
    raise ModelDirError(f"{model_dir}: {e}") from e


def settings_config(settings: Mapping) -> config_lib.Config:
  """A manifest's settings as a Config, the hyperparameters its families gained after it was written at their
  defaults (the manifest's values win)."""
  defaults = {}
  for family in model_families(settings):
    defaults.update(registry.family_defaults(family))
  return config_lib.Config({**defaults, **settings})


def component_dir(model_dir: str, name: str) -> str:
  """The model directory of a component (e.g. 'priors') of `model_dir`."""
  components = read_manifest(model_dir).get("components", {})
  if name not in components:
    raise ModelDirError(f"{model_dir}: its manifest names no {name!r} component")
  return os.path.join(model_dir, components[name])


def latest_checkpoint(model_dir: str) -> str:
  path = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
  if path is None:
    raise FileNotFoundError(f"no checkpoint in {model_dir}/checkpoints")
  return path


def restore(model_dir: str, **trackables):
  """Restores `trackables` (name=object, as checkpointed by the trainer) from the latest checkpoint."""
  tf.train.Checkpoint(**trackables).restore(latest_checkpoint(model_dir)).expect_partial() \
      .assert_existing_objects_matched()


def restore_priors(model_dir: str):
  """({source name: waveform prior}, Config) of a --job=priors model directory."""
  manifest = read_manifest(model_dir)
  cfg = config_lib.Config(manifest["settings"])
  priors = registry.build_priors(cfg, manifest["source_names"])
  restore(model_dir, priors=priors)
  return priors, cfg


def restore_spectral_priors(model_dir: str) -> dict:
  """{source name: SpectralPrior or SpectralFlowPrior} of a --job=spectral model directory (the kind its
  manifest's 'spectral_prior' names; 'vae' when absent)."""
  manifest = read_manifest(model_dir)
  if manifest["settings"]["job"] != "spectral":
    raise ModelDirError(f"{model_dir} holds a {manifest['separator']} model, not spectral priors")
  try:
    priors = registry.build_spectral_priors(manifest["settings"], manifest["source_names"])
  except ValueError as e:
    raise ModelDirError(f"{model_dir}: {e}") from e
  restore(model_dir, priors=priors)
  return priors


def restore_harmonic_priors(model_dir: str) -> dict:
  """{source name: HarmonicPrior} of a --job=harmonic_priors model directory (fitted)."""
  manifest = read_manifest(model_dir)
  if manifest["settings"]["job"] != "harmonic_priors":
    raise ModelDirError(f"{model_dir} holds a {manifest['separator']} model, not harmonic priors")
  priors = registry.build_harmonic_priors(manifest["settings"], manifest["source_names"], manifest["sample_rate"])
  restore(model_dir, priors=priors)
  return priors


class SourcesError(ModelDirError):
  """--sources names a class the model (and its --extra_priors) has no prior for, or a class twice."""


def select_sources(available: Sequence[str], sources: Sequence[str] = None) -> tuple:
  """The classes to separate: `sources` (in the order given) if any, else every one of `available`.
  SourcesError naming the available classes for an unknown or repeated name."""
  available = tuple(available)
  if sources is None:
    return available
  sources = tuple(str(s).strip() for s in sources)
  unknown = [s for s in sources if s not in available]
  if unknown or not sources:
    raise SourcesError(f"unknown source(s) {unknown}; available: {', '.join(available)}" if unknown
                       else f"no sources named; available: {', '.join(available)}")
  repeated = sorted({s for s in sources if sources.count(s) > 1})
  if repeated:
    raise SourcesError(f"source(s) {repeated} named more than once")
  return sources


def restore_extra_priors(extra_priors: Mapping[str, str], sample_rate: int, latent_dim: int) -> dict:
  """{name: SpectralPrior} for --extra_priors name=DIR: DIR a --job=spectral directory (or a spectral_encoder
  one: its priors), whose class `name`, or its only class, is taken (under `name`). SourcesError if it is at
  another sample rate or latent size (the STFT and concentration are checked by SpectralPriorSeparator)."""
  out = {}
  for name, path in (extra_priors or {}).items():
    manifest = read_manifest(path)
    prior_dir = component_dir(path, PRIORS_SUBDIR) if manifest["settings"]["job"] == "spectral_encoder" else path
    priors = restore_spectral_priors(prior_dir)
    if name in priors:
      prior = priors[name]
    elif len(priors) == 1:
      prior = next(iter(priors.values()))
    else:
      raise SourcesError(f"--extra_priors {name}={path}: it has priors for {', '.join(priors)}, none named "
                         f"{name!r} (a directory of one prior may be named anything)")
    rate = int(read_manifest(prior_dir)["sample_rate"])
    if rate != int(sample_rate) or prior.latent_dim != int(latent_dim):
      raise SourcesError(f"--extra_priors {name}={path}: {rate} Hz, latent size {prior.latent_dim}; the model's "
                         f"priors: {sample_rate} Hz, {latent_dim}")
    out[name] = prior
  return out


def quality_overrides(cfg: config_lib.Config, quality: str) -> list:
  """The '--name=value' settings quality preset `quality` (QUALITIES) sets for a model of saved settings `cfg`
  (load_config): none for 'best' (its saved settings) or for a kind with one setting; a spectral_encoder's
  MAP-fit iterations capped at PRESET_ITERATIONS and its MISI rounds at PRESET_PHASE_ITERATIONS (never more
  than it saves)."""
  if quality not in QUALITIES:
    raise ValueError(f"quality={quality!r}; choose from {QUALITIES}")
  kind, out = separator_kind(cfg), []
  for name, caps in (("iterations", PRESET_ITERATIONS), ("phase_iterations", PRESET_PHASE_ITERATIONS)):
    cap = caps.get(kind, {}).get(quality)
    if cap is not None:
      out.append(f"--spectral_search.{name}={min(cap, int(cfg[f'spectral_search.{name}']))}")
  return out


def load_separator(model_dir: str, overrides: Sequence[str] = (), sources: Sequence[str] = None,
                   extra_priors: Mapping[str, str] = None, quality: str = "best") -> Separator:
  """The separator a model directory holds, with '--name=value' overrides of its settings.

  quality: 'best' (the saved settings), 'balanced' or 'fast' (quality_overrides; `overrides` still win).

  job priors -> LangevinSeparator (or PeriodicSeparator with priors_search=periodic); variational /
  supervised -> EncoderSeparator; nmf -> NMFSeparator; spectral -> SpectralPriorSeparator (MAP from the priors'
  own encoders); spectral_encoder -> the same started from (iterations=0: given by) the amortised encoder.

  Priors compose (docs: one prior per class, no class knows the others):
  sources: separate with these classes' priors only, in this order (a mix of a subset of the classes; the
    estimates add up to it). Prior-based kinds (langevin, periodic, nmf, spectral, spectral_encoder: the
    amortised encoder's outputs for these classes, mass shares renormalised over them); an encoder
    (variational / supervised) separator has fixed outputs: SourcesError.
  extra_priors: {name: spectral prior model directory}: add classes the model was not trained with (spectral
    kinds only, same STFT, concentration, latent size and rate); they start the MAP fit from their own prior's
    encoder. With no `sources`, the model's classes then the extra ones."""
  manifest = read_manifest(model_dir)
  saved = load_config(model_dir)
  try:
    cfg = saved.with_overrides(quality_overrides(saved, quality) + list(overrides))
  except (KeyError, ValueError) as e:
    raise ModelDirError(f"{model_dir}: {e}") from e
  names, rate, mix = tuple(manifest["source_names"]), manifest["sample_rate"], manifest["mix"]
  kind = separator_kind(cfg)
  extra_priors = dict(extra_priors or {})
  clash = [n for n in extra_priors if n in names]
  if clash:
    raise SourcesError(f"--extra_priors {clash}: the model already has a prior for that class")
  if extra_priors and kind not in ("spectral", "spectral_encoder"):
    raise SourcesError(f"{model_dir}: extra priors are spectral priors; a {kind} model cannot take them")
  chosen = select_sources(names + tuple(extra_priors), sources)
  if kind == "encoder" and chosen != names:
    raise SourcesError(f"{model_dir}: an encoder ({cfg.job}) separator has one fixed output per class "
                       f"({', '.join(names)}): --sources is for prior-based models (spectral, nmf, langevin)")
  if kind in ("langevin", "periodic"):
    priors, _ = restore_priors(model_dir)
    priors = {n: priors[n] for n in chosen}
    if kind == "periodic":
      from vsep_tf.separators.periodic import PeriodicSeparator  # pylint: disable=import-outside-toplevel
      return PeriodicSeparator(priors, rate, mix, **registry.factory_kwargs(cfg, "periodic"))
    from vsep_tf.separators.langevin import LangevinSeparator  # pylint: disable=import-outside-toplevel
    return LangevinSeparator(priors, rate, mix, sigma_max=cfg.langevin_sigma_max, sigma_min=cfg.langevin_sigma_min,
                             num_levels=cfg.langevin_levels, steps_per_level=cfg.langevin_steps_per_level,
                             step_scale=cfg.langevin_step_scale, mix_weight=cfg.langevin_mix_weight, seed=cfg.seed)
  if kind == "encoder":
    from vsep_tf.separators.encoder import EncoderSeparator, build_encoder  # pylint: disable=import-outside-toplevel
    encoder = build_encoder(len(names), mix, **registry.factory_kwargs(cfg, "encoder"))
    restore(model_dir, encoder=encoder)
    return EncoderSeparator(encoder, names, rate, method=cfg.job)
  if kind == "nmf":
    from vsep_tf.separators.nmf import NMF_FILENAME, NMFSeparator  # pylint: disable=import-outside-toplevel
    separator = NMFSeparator.load(os.path.join(model_dir, NMF_FILENAME))
    return separator if chosen == names else separator.subset(chosen)
  if kind == "harmonic":
    from vsep_tf.separators.harmonic import HarmonicSeparator, PitchEncoder  # pylint: disable=import-outside-toplevel
    priors = restore_harmonic_priors(component_dir(model_dir, PRIORS_SUBDIR))
    encoder = PitchEncoder.for_priors(priors, **registry.factory_kwargs(cfg, "harmonic_encoder"))
    restore(model_dir, encoder=encoder)
    if chosen != names:
      raise SourcesError(f"{model_dir}: a harmonic separator's pitch encoder names every class it was trained with "
                         f"({', '.join(names)}); it cannot separate a subset")
    return HarmonicSeparator(priors, encoder, rate, mix, **registry.factory_kwargs(cfg, "harmonic_search"))
  if kind == "harmonic_priors":
    raise ModelDirError(f"{model_dir} holds harmonic priors only; a --job=harmonic_separator directory (priors and "
                        f"pitch encoder) separates")
  if kind in ("spectral", "spectral_encoder"):
    from vsep_tf.separators import spectral  # pylint: disable=import-outside-toplevel
    options = registry.factory_kwargs(cfg, "spectral_search")
    if kind == "spectral_encoder":
      priors = restore_spectral_priors(component_dir(model_dir, PRIORS_SUBDIR))
      encoder = spectral.SpectralEncoder.for_priors(priors, **registry.factory_kwargs(cfg, "spectral_encoder"))
      restore(model_dir, encoder=encoder)
      options["encoder"] = encoder
    else:
      priors = restore_spectral_priors(model_dir)
    if tuple(priors) != names:
      raise ModelDirError(f"{model_dir}: its priors are for {tuple(priors)}, its manifest names {names}")
    priors.update(restore_extra_priors(extra_priors, rate, next(iter(priors.values())).latent_dim))
    if chosen != names:
      priors = {n: priors[n] for n in chosen}
      if "encoder" in options:  # the amortised encoder's class of every chosen prior (None: an added class)
        options["encoder_sources"] = [names.index(n) if n in names else None for n in chosen]
    return spectral.SpectralPriorSeparator(priors, rate, mix, **options)
  raise ModelDirError(f"{model_dir}: no separator for job {cfg.job!r}")


def is_model_dir(path: str) -> bool:
  """True for a folder with a manifest (or an older one with config.flags, which read_manifest explains)."""
  return os.path.isfile(os.path.join(path, MANIFEST_FILENAME)) or \
      os.path.isfile(os.path.join(path, LEGACY_CONFIG_FILENAME))
