"""Flags: run-level flags apart from model hyperparameters, and the resolved config saved with every model.

Model hyperparameters are not hand-written flags: every registered factory (`build_wavenet_prior`,
`build_flow_prior`, ...) gets one flag per keyword argument, named `<family>.<argument>` and typed from the
argument's default, e.g. `--wavenet.residual_channels=32`. The model code therefore holds no flags and no
hidden global config: the trainer passes explicit keyword arguments (`factory_kwargs`).

The resolved flags are written to `<model_dir>/config.flags` (flagfile syntax, only this project's flags) and
read back by `load_config(model_dir)`: a model directory alone is enough to rebuild its models.
"""
from __future__ import annotations

import inspect
import os
import tempfile

from absl import flags

CONFIG_FILENAME = "config.flags"


def _define_run_flags(fv: flags.FlagValues):
  # --- run ---
  flags.DEFINE_string("model_dir", None, "Where checkpoints, TensorBoard logs and config.flags go.", flag_values=fv)
  flags.DEFINE_enum("job", "priors", ["priors", "variational", "supervised", "nmf", "spectral", "spectral_encoder"],
                    "What to train: one prior per source class ('priors'; also the Langevin separator), the "
                    "amortised encoder on mixes alone with frozen priors ('variational'), the same encoder on "
                    "(mix, sources) pairs ('supervised'), per-class NMF dictionaries ('nmf'), one spectral VAE prior per "
                    "source class, separating by MAP inference ('spectral'; settings --spectral.* and "
                    "--spectral_search.*), the amortised encoder for spectral priors on mixes alone by their "
                    "ELBO ('spectral_encoder'; --prior_dir, --spectral_encoder.*).", flag_values=fv)
  flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi_worker"],
                    "tf.distribute strategy. multi_worker reads the cluster from TF_CONFIG.", flag_values=fv)
  flags.DEFINE_list("worker_hosts", [], "--strategy=multi_worker: 'host:port' of every worker (worker 0 is the "
                    "chief); sets TF_CONFIG before the strategy is created. Empty: TF_CONFIG from the environment.",
                    flag_values=fv)
  flags.DEFINE_integer("task_index", 0, "--strategy=multi_worker with --worker_hosts: this worker's index.",
                       flag_values=fv)
  flags.DEFINE_float("collective_timeout_seconds", 0.0,
                     "--strategy=multi_worker: fail a collective (a lost worker) after this many seconds "
                     "instead of hanging (0: no timeout).", flag_values=fv)
  flags.DEFINE_integer("debug_nan_at_step", 0, "Testing aid: replace the batch of this (1-based) step with NaNs "
                       "(0: off).", flag_values=fv)
  flags.DEFINE_integer("num_cpu_devices", 1,
                       "With --strategy=mirrored and no GPU: split the CPU into this many logical devices.",
                       flag_values=fv)
  flags.DEFINE_integer("train_steps", 1000, "Total optimisation steps.", flag_values=fv)
  flags.DEFINE_integer("steps_per_loop", 10, "Steps run inside one tf.function call.", flag_values=fv)
  flags.DEFINE_integer("checkpoint_every", 200, "Save a checkpoint every this many steps.", flag_values=fv)
  flags.DEFINE_integer("max_checkpoints", 3, "Checkpoints kept.", flag_values=fv)
  flags.DEFINE_integer("seed", 0, "Global seed (weights, crops, noise).", flag_values=fv)
  flags.DEFINE_integer("batch_size", 8, "GLOBAL batch size per source class.", flag_values=fv)
  flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate.", flag_values=fv)
  flags.DEFINE_float("grad_clip_norm", 1.0, "Global gradient-norm clip (0: off).", flag_values=fv)
  flags.DEFINE_integer("warmup_steps", 100, "Linear learning-rate warm-up steps.", flag_values=fv)
  flags.DEFINE_float("audio_summary_seconds", 1.0,
                     "Length of the audio examples written to TensorBoard at each checkpoint (0: none).",
                     flag_values=fv)
  # --- data ---
  flags.DEFINE_enum("dataset", "toy", ["toy", "stems", "musdb"], "Dataset family.", flag_values=fv)
  flags.DEFINE_string("data_root", None, "Stem folder root ({train,test}/<track>/<source>.wav|flac).",
                      flag_values=fv)
  flags.DEFINE_enum("bad_audio", "error", ["error", "skip"],
                    "--dataset=stems: a corrupt or truncated audio file raises a clear error ('error'), or its "
                    "track is skipped with a warning and counted ('skip').", flag_values=fv)
  flags.DEFINE_integer("valid_tracks", 0, "--dataset=stems: hold out this many train tracks as split 'valid' (by "
                       "the CRC32 of their names; 0: none). Tune on --split=valid, never on test.", flag_values=fv)
  flags.DEFINE_float("max_solo_seconds", 1200.0, "--job=spectral: solo audio read per source class (the train "
                     "tracks in order until this much).", flag_values=fv)
  flags.DEFINE_string("musdb_root", None, "MUSDB18 / MUSDB18-HQ root.", flag_values=fv)
  flags.DEFINE_boolean("musdb_is_wav", True, "MUSDB18-HQ (wav) rather than stems .mp4.", flag_values=fv)
  flags.DEFINE_integer("sample_rate", 0, "Model sample rate (0: the dataset's own).", flag_values=fv)
  flags.DEFINE_enum("mix", "", ["", "sum", "mean"], "Mixing function ('': the dataset's default).",
                    flag_values=fv)
  flags.DEFINE_integer("crop_length", 16384, "Training crop length in samples.", flag_values=fv)
  flags.DEFINE_integer("toy_seed", 0, "Toy data seed for training (evaluate on a different one).",
                       flag_values=fv)
  flags.DEFINE_float("gain_db", 0.0, "Random gain augmentation in +-dB for recorded data (0: off).",
                     flag_values=fv)
  flags.DEFINE_float("min_rms", 0.0, "Skip solo crops quieter than this RMS (recorded data has silences).",
                     flag_values=fv)
  # --- priors ---
  flags.DEFINE_string("prior", "wavenet", "Prior family (a key of vsep_tf.priors.PRIORS).", flag_values=fv)
  flags.DEFINE_float("sigma_min", 0.01, "Smallest training noise level (log-uniform sampling).",
                     flag_values=fv)
  flags.DEFINE_float("sigma_max", 1.0, "Largest training noise level.", flag_values=fv)
  flags.DEFINE_float("p_clean", 0.2, "Probability of a noiseless (sigma=0) training example.", flag_values=fv)
  # --- how a --job=priors model directory separates ---
  flags.DEFINE_enum("priors_search", "langevin", ["langevin", "periodic"],
                    "A --job=priors directory separates by noise-annealed Langevin dynamics ('langevin') or by the "
                    "periodic-component search ('periodic': steady tones split class-agnostically, named by the "
                    "priors' energy; assumes each source is one steady periodic tone, as in the toy data; "
                    "settings: --periodic.*).", flag_values=fv)
  # --- Langevin separator (BASIS schedule, REFERENCES.md) ---
  flags.DEFINE_float("langevin_sigma_max", 1.0, "Langevin: first (largest) noise level.", flag_values=fv)
  flags.DEFINE_float("langevin_sigma_min", 0.01, "Langevin: last (smallest) noise level.", flag_values=fv)
  flags.DEFINE_integer("langevin_levels", 10, "Langevin: number of geometric noise levels.", flag_values=fv)
  flags.DEFINE_integer("langevin_steps_per_level", 100, "Langevin: steps at each level.", flag_values=fv)
  flags.DEFINE_float("langevin_step_scale", 3e-5, "Langevin: eta = scale * (sigma / sigma_min)^2.", flag_values=fv)
  # --- separators (--job=variational / supervised) ---
  flags.DEFINE_string("prior_dir", None, "variational: the --job=priors model directory whose priors are frozen.",
                      flag_values=fv)
  flags.DEFINE_float("elbo_sigma_start", 0.3, "variational: prior noise level at step 0 (annealed).",
                     flag_values=fv)
  flags.DEFINE_float("elbo_sigma_end", 0.01, "variational: prior noise level after annealing.", flag_values=fv)
  flags.DEFINE_float("elbo_anneal_fraction", 0.7, "variational: fraction of --train_steps spent annealing.",
                     flag_values=fv)
  flags.DEFINE_float("elbo_mix_sigma", 0.01, "variational: std of the Gaussian mixing likelihood p(m | s).",
                     flag_values=fv)
  flags.DEFINE_bool("elbo_prior_noise", False,
                    "variational, score priors: read the score at s + sigma e (the noised point the denoiser was "
                    "trained on; score distillation) instead of at the sample s itself.", flag_values=fv)
  flags.DEFINE_float("elbo_entropy_weight", 1.0, "variational: weight of the entropy H[q] (1 = the ELBO).",
                     flag_values=fv)
  flags.DEFINE_string("teacher_dir", None,
                      "variational: a separator model dir (e.g. --job=nmf, learned from SOLO audio like the "
                      "priors) whose estimates on the training MIXES the encoder first imitates.", flag_values=fv)
  flags.DEFINE_string("init_from", None, "variational / supervised: start a fresh run from the encoder weights of "
                      "this separator model dir (fine-tuning).", flag_values=fv)
  flags.DEFINE_integer("distill_steps", 0, "variational: steps imitating --teacher_dir before the ELBO steps.",
                       flag_values=fv)
  flags.DEFINE_integer("sleep_steps", 0,
                       "variational: steps of the wake-sleep 'sleep' phase before the ELBO steps: the encoder learns "
                       "to split mixes of SAMPLES DRAWN FROM THE FROZEN PRIORS (loss -SI-SDR against those samples; "
                       "amortised inference on the priors' own joint p(s) p(m | s), no real sources).",
                       flag_values=fv)
  flags.DEFINE_integer("sleep_bank_size", 64, "variational: prior samples drawn per source class for --sleep_steps "
                       "(cached in <model_dir>/prior_samples.npz; mixes combine them at random).", flag_values=fv)
  flags.DEFINE_integer("sleep_bank_length", 0, "variational: length of every prior sample (0: 2 x --crop_length).",
                       flag_values=fv)
  flags.DEFINE_float("sleep_gain_db", 0.0, "variational: every prior sample in a sleep mix is scaled by a random gain "
                     "uniform in +-this many dB (per source and example): the encoder meets sources at levels the "
                     "samples alone do not cover.", flag_values=fv)
  flags.DEFINE_bool("sleep_match_level", False, "variational: scale each class's prior samples (one factor per "
                    "class) so their RMS equals that of the class's solo TRAINING audio (the data the priors saw): "
                    "sampled levels can be far off (chorale samples: clarinet 0.005 vs 0.1).", flag_values=fv)
  flags.DEFINE_float("sleep_temperature", 1.0, "variational: sampling temperature of the prior samples.",
                     flag_values=fv)
  flags.DEFINE_integer("valid_examples", 16, "Held-out ('valid' split) mixes scored (SI-SDR) at every checkpoint.",
                       flag_values=fv)
  flags.DEFINE_float("langevin_mix_weight", 1.0, "Langevin: lambda = weight / sigma^2 on ||f(x) - m||^2.",
                     flag_values=fv)


# Factory arguments that are not model hyperparameters (Keras names; seeds come from --seed).
_NOT_HYPERPARAMETERS = ("name", "seed")


def _define_factory_flags(fv: flags.FlagValues, family: str, factory):
  """One flag per keyword argument of `factory`, named '<family>.<arg>', typed by its default."""
  for name, param in inspect.signature(factory).parameters.items():
    if (param.kind not in (param.KEYWORD_ONLY, param.POSITIONAL_OR_KEYWORD) or param.default is param.empty
        or name in _NOT_HYPERPARAMETERS):
      continue
    default, flag_name = param.default, f"{family}.{name}"
    help_ = f"{factory.__name__}({name}=...)"
    if isinstance(default, bool):
      flags.DEFINE_boolean(flag_name, default, help_, flag_values=fv)
    elif isinstance(default, int):
      flags.DEFINE_integer(flag_name, default, help_, flag_values=fv)
    elif isinstance(default, float):
      flags.DEFINE_float(flag_name, default, help_, flag_values=fv)
    elif isinstance(default, (list, tuple)):
      flags.DEFINE_list(flag_name, [str(v) for v in default], help_, flag_values=fv)
    elif isinstance(default, str) or default is None:
      flags.DEFINE_string(flag_name, default, help_, flag_values=fv)
    else:
      raise TypeError(f"{flag_name}: no flag type for default {default!r}")


def factory_families():
  """name -> factory for every family whose hyperparameters are flags."""
  from vsep_tf import priors  # pylint: disable=import-outside-toplevel
  from vsep_tf.priors import spectral  # pylint: disable=import-outside-toplevel
  from vsep_tf.separators import encoder, nmf, periodic  # pylint: disable=import-outside-toplevel
  from vsep_tf.separators import spectral as spectral_search  # pylint: disable=import-outside-toplevel
  return {**priors.PRIORS, "encoder": encoder.build_encoder, "nmf": nmf.nmf_hyperparameters,
          "periodic": periodic.periodic_hyperparameters, "spectral": spectral.build_spectral_prior,
          "spectral_search": spectral_search.spectral_search_hyperparameters,
          "spectral_encoder": spectral_search.build_spectral_encoder}


def define_flags(fv: flags.FlagValues = flags.FLAGS):
  """Defines every project flag on `fv` (idempotent)."""
  if "model_dir" in fv:
    return fv
  _define_run_flags(fv)
  for family, factory in factory_families().items():
    _define_factory_flags(fv, family, factory)
  return fv


def factory_kwargs(fv: flags.FlagValues, family: str) -> dict:
  """The keyword arguments for the factory of `family`, read from the flags '<family>.*'."""
  factory = factory_families()[family]
  kwargs = {}
  for name, param in inspect.signature(factory).parameters.items():
    key = f"{family}.{name}"
    if key in fv and name not in _NOT_HYPERPARAMETERS:
      value = fv[key].value
      if isinstance(param.default, tuple):
        value = tuple(type(param.default[0])(v) if param.default else v for v in value)
      kwargs[name] = value
  return kwargs


def project_flag_names():
  """Names of this project's flags (not absl's own), sorted."""
  return sorted(define_flags(flags.FlagValues()))


def config_string(fv: flags.FlagValues) -> str:
  """This project's flags as flagfile text, one '--name=value' a line (sorted, defaults included)."""
  lines = []
  for name in project_flag_names():
    if name not in fv:
      continue
    serialized = fv[name].serialize()
    if serialized:  # None-valued string flags serialise to ''
      lines.append(serialized)
  return "\n".join(lines) + "\n"


def atomic_write_text(path: str, text: str):
  """Writes `text` to `path` via a temp file + os.replace: readers never see half a file."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      f.write(text)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def save_config(fv: flags.FlagValues, model_dir: str):
  atomic_write_text(os.path.join(model_dir, CONFIG_FILENAME), config_string(fv))


def load_config(model_dir: str, overrides=()) -> flags.FlagValues:
  """A fresh FlagValues holding the config saved in `model_dir` (plus `overrides`, '--name=value' strings)."""
  path = os.path.join(model_dir, CONFIG_FILENAME)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{model_dir} is not a vsep-tf model directory (no {CONFIG_FILENAME})")
  fv = define_flags(flags.FlagValues())
  fv(["vsep_tf", f"--flagfile={path}", *overrides])
  return fv
