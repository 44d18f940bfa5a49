"""The absl flags of the training, tuning and evaluation CLIs, and the Config they resolve to.

Run-level flags (paths, strategy, steps) are written here; model hyperparameters are not hand-written flags:
every factory of registry.FAMILIES gets one flag per keyword argument, named `<family>.<argument>` and typed
from the argument's default, e.g. `--spectral.n_fft=4096`. Below the CLIs nothing reads flags: the CLIs turn
their flags into a `vsep_tf.config.Config` (`config_from_flags`) and pass it on. A training run writes the
resolved flags to `<model_dir>/config.flags` (a flagfile that reproduces the run) and the model's own
settings to `<model_dir>/manifest.json` (vsep_tf/model_dir.py).
"""
from __future__ import annotations

import os

from absl import flags

from vsep_tf import config as config_lib
from vsep_tf import registry

CONFIG_FILENAME = "config.flags"


def _define_run_flags(fv: flags.FlagValues):
  # --- run ---
  flags.DEFINE_string("model_dir", None, "Where checkpoints, TensorBoard logs and config.flags go.", flag_values=fv)
  flags.DEFINE_enum("job", "spectral_separator",
                    ["spectral_separator", "spectral", "spectral_encoder", "harmonic_separator", "harmonic_priors",
                     "harmonic", "nmf", "priors", "variational", "supervised"],
                    "What to train. 'spectral_separator' (the recipe that works): one spectral VAE prior per source "
                    "class from solo audio into <model_dir>/priors (--prior_steps, --prior_batch_size, "
                    "--prior_learning_rate), then the amortised encoder on mixes alone by their ELBO into "
                    "<model_dir> (--train_steps, --batch_size, --learning_rate); one directory, resumable at every "
                    "stage. Its stages alone: 'spectral' (the priors; separates by MAP from their own encoders), "
                    "'spectral_encoder' (the encoder for the priors of --prior_dir). 'harmonic_separator' (steady "
                    "harmonic tones, e.g. the toy: one harmonic prior per class fitted to solo audio into "
                    "<model_dir>/priors, then a pitch encoder by a sleep phase on their samples: --train_steps, "
                    "--batch_size frames; stages 'harmonic_priors', 'harmonic'). Baseline: 'nmf' (per-class "
                    "NMF dictionaries). Waveform methods (docs/research.md): 'priors' (one waveform prior per "
                    "class: --prior; separates by Langevin), 'variational' (waveform encoder on mixes by the "
                    "ELBO of --prior_dir's frozen priors), 'supervised' (the same encoder on (mix, sources) "
                    "pairs: a reference).", flag_values=fv)
  flags.DEFINE_enum("spectral_prior", "vae", ["vae", "flow"],
                    "--job=spectral (and the priors stage of spectral_separator): the kind of spectral prior per "
                    "class: 'vae' (priors/spectral.py, settings --spectral.*) or 'flow' (a Glow over the normalised "
                    "log-spectral frames, priors/spectral_flow.py, settings --spectral_flow.*).", flag_values=fv)
  flags.DEFINE_integer("prior_steps", 2000, "--job=spectral_separator: training steps of the priors stage.",
                       flag_values=fv)
  flags.DEFINE_integer("prior_batch_size", 256, "--job=spectral_separator: solo STFT frames per class and step "
                       "in the priors stage.", flag_values=fv)
  flags.DEFINE_float("prior_learning_rate", 1e-3, "--job=spectral_separator: learning rate of the priors stage.",
                     flag_values=fv)
  flags.DEFINE_enum("encoder_objective", "elbo", ["elbo", "map"],
                    "--job=spectral_encoder / spectral_separator: what trains the amortised encoder on mixes: "
                    "'elbo' (the priors' ELBO, z sampled from q) or 'map' (the MAP fit's own objective at the "
                    "encoder's means, latent prior weight --spectral_search.prior_weight).", flag_values=fv)
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


def _define_factory_flags(fv: flags.FlagValues, family: str):
  """One flag per hyperparameter of a registry family, named '<family>.<arg>', typed by its default."""
  factory = registry.FAMILIES[family]
  for flag_name, default in registry.family_defaults(family).items():
    help_ = f"{factory.__name__}({flag_name.split('.', 1)[1]}=...)"
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


def define_flags(fv: flags.FlagValues = flags.FLAGS):
  """Defines every project flag on `fv` (idempotent)."""
  if "model_dir" in fv:
    return fv
  _define_run_flags(fv)
  for family in registry.FAMILIES:
    _define_factory_flags(fv, family)
  return fv


def project_flag_names():
  """Names of this project's flags (not absl's own), sorted."""
  return sorted(define_flags(flags.FlagValues()))


def config_from_flags(fv: flags.FlagValues) -> config_lib.Config:
  """The project's flags of `fv` as a Config (every project flag, defaults included)."""
  return config_lib.Config({name: fv[name].value for name in project_flag_names() if name in fv})


def parse_flags(argv) -> config_lib.Config:
  """A Config from command-line style arguments (['--flagfile=configs/toy.flags', '--train_steps=5'])."""
  fv = define_flags(flags.FlagValues())
  fv(["vsep_tf", *argv])
  return config_from_flags(fv)


def save_config(cfg, model_dir: str):
  """Writes the run's flags to <model_dir>/config.flags (a flagfile that reproduces the run)."""
  config_lib.atomic_write_text(os.path.join(model_dir, CONFIG_FILENAME), config_lib.flagfile_text(cfg))


def load_run_config(model_dir: str, overrides=()) -> config_lib.Config:
  """The run flags saved in <model_dir>/config.flags (plus '--name=value' overrides): the full run config,
  data paths included (tools that need the model's data; load_separator reads the manifest instead)."""
  path = os.path.join(model_dir, CONFIG_FILENAME)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{model_dir} has no {CONFIG_FILENAME} (not a training run directory)")
  return parse_flags([f"--flagfile={path}", *overrides])
