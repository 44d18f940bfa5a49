r"""Hyperparameter search over the project's own training loop (KerasTuner).

  python -m vsep_tf.tune --flagfile=configs/tune_toy.flags
  python -m vsep_tf.train --flagfile=runs/tune_toy/priors_wavenet/best.flags     # train the winner

Every trial is one run of the real trainer: `VsepTuner.run_trial` builds a fresh FlagValues from the resolved
base config (<project>/base.flags: the flagfile's project flags) plus the trial's hyperparameters as
'--name=value' overrides, runs `trainer.get_trainer(job)(fv, strategy).train()` into
<project>/trial_<id>/model and returns the objective:

  valid_nll     (--job=priors, 'auto') mean over classes and --tune_valid_sigmas of each prior's NLL
                (nats/sample) on held-out 'valid' solo crops of its own class (confusion.log_likelihood_table);
  valid_si_sdr  (--job=variational / supervised, 'auto') mean over sources of SeparatorTrainer.validate();
  valid_sdr     (--job=spectral_encoder / spectral_separator / spectral, 'auto') a SEPARATION score: the trial's
                model directory is loaded with model_dir.load_separator (its saved flags overridden by
                --tune_valid_override, e.g. '--spectral_search.iterations=0' for the one pass), the held-out
                'valid' split of the training data is separated (--dataset=stems: the --valid_tracks train tracks;
                toy: --tune_valid_examples items of the training seed's valid split; each cut to its first
                --tune_valid_seconds) and scored exactly as vsep_tf.evaluate does (museval v4 SDR on 1 s windows,
                median over windows, tracks, then sources: result['overall']['sdr'], dB, maximised). The full
                result is written to <project>/trial_<id>/valid_sdr.json;
  total_loss    the trainer's final mean training loss (any job).

Hyperparameters: --hp='<flag>=float:LO:HI[:log]', '<flag>=int:LO:HI[:STEP]', '<flag>=choice:A|B|C' (repeat
the flag); without --hp a built-in space for the job and prior family (`default_space`). Results in
<tune_dir>/<project_name>/: best.flags (the best trial's full config, accepted by vsep_tf.train unchanged,
--model_dir=<project>/best_model), trials.csv, trials.png. --overwrite=false (default) continues an
interrupted search: completed trials are kept and --max_trials counts them.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import shutil
import sys
import time

from absl import app, flags, logging

from vsep_tf import config as config_lib
from vsep_tf import run_flags

FLAGS = flags.FLAGS

OBJECTIVES = {"valid_nll": "min", "valid_si_sdr": "max", "valid_sdr": "max", "total_loss": "min"}
SPECTRAL_JOBS = ("spectral_encoder", "spectral_separator", "spectral")

# Built-in search spaces (spec strings, see parse_hp). Ranges sized for the toy data on a CPU.
PRIOR_SPACE = ("learning_rate=float:3e-4:1e-2:log", "sigma_min=float:0.003:0.03:log",
               "sigma_max=float:0.5:2.0:log", "p_clean=float:0.0:0.5")
FAMILY_SPACE = {
    "wavenet": ("wavenet.num_layers=int:6:12", "wavenet.residual_channels=choice:8|16|32",
                "wavenet.skip_channels=choice:16|32|64", "wavenet.num_mixtures=choice:5|10|20"),
    "flow": ("flow.num_blocks=int:2:4", "flow.flows_per_block=int:2:6", "flow.width=choice:16|32|48",
             "flow.num_layers=int:4:8"),
}
# The amortised spectral encoder for fixed priors (--prior_dir). Conditional in effect: wavenet_layers is read
# only by arch=wavenet, context_frames only by arch=conv, prior_weight only by encoder_objective=map (and by a MAP
# separation, --spectral_search.iterations > 0).
SPECTRAL_ENCODER_SPACE = ("spectral_encoder.arch=choice:conv|wavenet",
                          "spectral_encoder.hidden_units=choice:64|128|256", "spectral_encoder.wavenet_layers=int:4:7",
                          "spectral_encoder.context_frames=int:1:4",
                          "learning_rate=float:3e-4:3e-3:log", "encoder_objective=choice:elbo|map",
                          "spectral_search.prior_weight=float:0.1:1.0:log")
SPECTRAL_PRIOR_SPACE = ("spectral.latent_dim=choice:8|16|32", "spectral.hidden_units=choice:256|512")
SEPARATOR_SPACE = ("learning_rate=float:3e-4:1e-2:log", "elbo_sigma_start=float:0.1:1.0:log",
                   "elbo_sigma_end=float:0.003:0.05:log", "elbo_anneal_fraction=float:0.3:0.9",
                   "elbo_mix_sigma=float:0.003:0.1:log", "elbo_entropy_weight=float:0.1:1.0")


def define_tune_flags(fv: flags.FlagValues = FLAGS):
  """The project flags (the base training config) plus the search flags, on `fv` (idempotent)."""
  run_flags.define_flags(fv)
  if "tuner" in fv:
    return fv
  flags.DEFINE_enum("tuner", "random", ["random", "hyperband", "bayesian"], "Search algorithm.", flag_values=fv)
  flags.DEFINE_integer("max_trials", 4, "random / bayesian: total trials (completed ones of a resumed search "
                       "count).", flag_values=fv)
  flags.DEFINE_string("tune_dir", "runs/tune", "Search directory (KerasTuner state, trial model dirs, results).",
                      flag_values=fv)
  flags.DEFINE_string("project_name", None, "Sub-directory of --tune_dir (default: '<job>_<prior>').",
                      flag_values=fv)
  flags.DEFINE_boolean("overwrite", False, "Start afresh (delete the project); false continues a search.",
                       flag_values=fv)
  flags.DEFINE_enum("objective", "auto", ["auto", *OBJECTIVES],
                    "auto: valid_nll for --job=priors, valid_si_sdr for variational / supervised, valid_sdr for "
                    "spectral_encoder / spectral_separator / spectral, else total_loss.", flag_values=fv)
  flags.DEFINE_multi_string("hp", [], "A searched hyperparameter: '<flag>=float:LO:HI[:log]', "
                            "'<flag>=int:LO:HI[:STEP]' or '<flag>=choice:A|B|C'. Default: the built-in space.",
                            flag_values=fv)
  flags.DEFINE_list("tune_valid_sigmas", ["0.01", "0.1", "0.5"], "valid_nll: noise levels scored.",
                    flag_values=fv)
  flags.DEFINE_integer("tune_valid_examples", 8, "valid_nll: held-out solo crops per class; valid_sdr on toy "
                       "data: valid items separated.", flag_values=fv)
  flags.DEFINE_multi_string("tune_valid_override", [], "valid_sdr: '--name=value' replacing a flag saved in the "
                            "trial's model directory when it is loaded to separate (as vsep_tf.evaluate "
                            "--model_override), e.g. --tune_valid_override=--spectral_search.iterations=0 (the "
                            "encoder's one pass). Default: the trial's own separation settings.", flag_values=fv)
  flags.DEFINE_float("tune_valid_seconds", 0.0, "valid_sdr: separate and score only the first seconds of each "
                     "valid track (0: whole tracks).", flag_values=fv)
  flags.DEFINE_integer("tune_valid_workers", 0, "valid_sdr: museval scoring processes (0: in this process).",
                       flag_values=fv)
  flags.DEFINE_integer("hyperband_max_epochs", 9, "hyperband: most 'epochs' a trial gets.", flag_values=fv)
  flags.DEFINE_integer("hyperband_factor", 3, "hyperband: reduction factor.", flag_values=fv)
  flags.DEFINE_integer("steps_per_epoch", 50, "hyperband: training steps per epoch (--train_steps is ignored).",
                       flag_values=fv)
  flags.DEFINE_integer("bayesian_initial_points", 3, "bayesian: random trials before the Gaussian process.",
                       flag_values=fv)
  return fv


# ------------------------------------------------------------------------------------------ search space
def parse_hp(spec: str):
  """'<flag>=kind:args' -> (flag, kind, args). Checked against the project flags."""
  if "=" not in spec:
    raise ValueError(f"--hp={spec!r}: expected '<flag>=float:LO:HI[:log]', '=int:LO:HI[:STEP]' or '=choice:A|B'")
  name, rest = spec.split("=", 1)
  if name not in run_flags.project_flag_names():
    raise ValueError(f"--hp={spec!r}: {name!r} is not a vsep-tf flag")
  kind, _, args = rest.partition(":")
  if kind not in ("float", "int", "choice"):
    raise ValueError(f"--hp={spec!r}: kind {kind!r} is not float, int or choice")
  return name, kind, args


def default_space(fv) -> tuple:
  if fv.job == "priors":
    return PRIOR_SPACE + FAMILY_SPACE.get(fv.prior, ())
  if fv.job in ("variational", "supervised"):
    return SEPARATOR_SPACE if fv.job == "variational" else SEPARATOR_SPACE[:1]
  if fv.job == "spectral_encoder":
    return SPECTRAL_ENCODER_SPACE
  if fv.job == "spectral_separator":  # both stages: the priors' size and learning rate, then the encoder's
    return SPECTRAL_ENCODER_SPACE + SPECTRAL_PRIOR_SPACE + ("prior_learning_rate=float:3e-4:3e-3:log",)
  if fv.job == "spectral":  # the priors alone, separating by MAP from their own encoders
    return (("learning_rate=float:3e-4:3e-3:log",) + SPECTRAL_PRIOR_SPACE
            + ("spectral_search.prior_weight=float:0.1:1.0:log",))
  return ("learning_rate=float:3e-4:1e-2:log",)


def declare(hp, spec: str):
  """Declares one parsed spec on a keras_tuner HyperParameters `hp`; returns the value for this trial."""
  name, kind, args = parse_hp(spec)
  parts = args.split(":")
  if kind == "float":
    lo, hi = float(parts[0]), float(parts[1])
    sampling = parts[2] if len(parts) > 2 else "linear"
    return hp.Float(name, lo, hi, sampling=sampling)
  if kind == "int":
    return hp.Int(name, int(parts[0]), int(parts[1]), step=int(parts[2]) if len(parts) > 2 else 1)
  values = args.split("|")
  for cast in (int, float):
    try:
      values = [cast(v) for v in values]
      break
    except ValueError:
      continue
  return hp.Choice(name, values)


def overrides(values: dict) -> list:
  """The trial's hyperparameters as '--name=value' flags (KerasTuner's own 'tuner/*' entries left out)."""
  out = []
  for name, value in sorted(values.items()):
    if name.startswith("tuner/"):
      continue
    out.append(f"--{name}={value!r}" if isinstance(value, float) else f"--{name}={value}")
  return out


# ----------------------------------------------------------------------------------------------- objectives
def resolve_objective(fv) -> str:
  if fv.objective != "auto":
    return fv.objective
  if fv.job == "priors":
    return "valid_nll"
  if fv.job in ("variational", "supervised"):
    return "valid_si_sdr"
  if fv.job in SPECTRAL_JOBS:
    return "valid_sdr"
  return "total_loss"


def valid_eval_options(cfg, max_seconds: float = 0.0, num_examples: int = 0, num_workers: int = 0):
  """evaluate.EvalOptions for the held-out 'valid' split of a run config's training data (`cfg`: a Config or
  FlagValues): --dataset=stems with --valid_tracks > 0 (the train tracks it holds out), or toy (the training
  seed's 'valid' items, `num_examples` of them). Raises ValueError when the data has no held-out split."""
  from vsep_tf import evaluate as evaluate_lib  # pylint: disable=import-outside-toplevel
  if cfg.dataset == "stems":
    if not cfg.valid_tracks:
      raise ValueError("objective valid_sdr on --dataset=stems needs --valid_tracks > 0 (train tracks held out "
                       "as split 'valid'; never tune on test)")
    opts = evaluate_lib.EvalOptions(dataset="stems", data_root=cfg.data_root, valid_tracks=cfg.valid_tracks)
  elif cfg.dataset == "toy":
    opts = evaluate_lib.EvalOptions(dataset="toy", toy_seed=cfg.toy_seed, num_examples=num_examples)
  else:
    raise ValueError(f"objective valid_sdr: --dataset={cfg.dataset} has no held-out split here (stems with "
                     "--valid_tracks, or toy)")
  return dataclasses.replace(opts, split="valid", mix=cfg.mix, max_seconds=float(max_seconds),
                             num_workers=int(num_workers)).validate()


def valid_sdr(model_dir: str, opts, model_overrides=()) -> dict:
  """Separates the tracks of `opts` (valid_eval_options) with the separator of `model_dir` (load_separator, its
  saved flags overridden by `model_overrides`, '--name=value' each) and scores them as vsep_tf.evaluate does.
  Returns evaluate's result dict: result['overall']['sdr'] is the median over sources of the median over tracks
  of the median over 1 s windows of museval's SDR (dB)."""
  from vsep_tf import evaluate as evaluate_lib  # pylint: disable=import-outside-toplevel
  from vsep_tf.model_dir import load_separator  # pylint: disable=import-outside-toplevel
  separator = load_separator(model_dir, list(model_overrides))
  result = evaluate_lib.evaluate(opts, separator=separator, verbose=0)
  result["model_dir"] = os.path.abspath(model_dir)
  result["model_overrides"] = list(model_overrides)
  return result


def valid_nll(trainer, sigmas, num_examples: int) -> dict:
  """{class: mean NLL (nats/sample) of its prior on held-out 'valid' solo crops, over `sigmas`}."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  from vsep_tf.evaluation import confusion  # pylint: disable=import-outside-toplevel
  cfg = trainer.cfg
  ds = trainer.data.solo("valid", crop_length=cfg.crop_length, batch_size=num_examples, seed=cfg.seed + 1,
                         repeat=False)
  batch = next(iter(ds))
  out = {}
  for name, prior in trainer.priors.items():
    table = confusion.log_likelihood_table({name: prior}, {name: np.asarray(batch[name])}, sigmas,
                                           batch_size=num_examples, seed=cfg.seed + 1)
    out[name] = -float(table[:, 0, 0].mean())
  return out


def warn_prior_split(fv):
  """Logs a warning when --prior_dir's priors were trained with other held-out tracks than --valid_tracks (the
  valid tracks may then be in the priors' training audio)."""
  if not fv.prior_dir or fv.dataset != "stems":
    return
  from vsep_tf import model_dir as model_dir_lib  # pylint: disable=import-outside-toplevel
  try:
    held = model_dir_lib.read_manifest(fv.prior_dir)["settings"].get("valid_tracks")
  except (ValueError, OSError, KeyError):
    return
  if held != fv.valid_tracks:
    logging.warning("--prior_dir=%s was trained with --valid_tracks=%s, this search holds out %s: the valid "
                    "tracks may be in the priors' training audio", fv.prior_dir, held, fv.valid_tracks)


# -------------------------------------------------------------------------------------------------- tuner
def _tuner_base():
  import keras_tuner  # pylint: disable=import-outside-toplevel
  return keras_tuner.Tuner


class _TunerMixin:
  """Runs vsep-tf's custom training loop per trial. Construct with `make_tuner`."""

  def setup(self, fv, strategy, base_flagfile, space, objective):
    self.fv, self.strategy, self.base_flagfile = fv, strategy, base_flagfile
    self.space, self.objective_name = tuple(space), objective
    self.durations = {}

  def trial_model_dir(self, trial_id) -> str:
    return os.path.join(self.project_dir, f"trial_{trial_id}", "model")

  def trial_flags(self, trial):
    """The trial's Config: base config + hyperparameters + its own model dir (+ Hyperband's steps)."""
    values = trial.hyperparameters.values
    extra = [f"--model_dir={self.trial_model_dir(trial.trial_id)}"]
    if "tuner/epochs" in values:
      extra.append(f"--train_steps={int(values['tuner/epochs']) * self.fv.steps_per_epoch}")
    return run_flags.parse_flags([f"--flagfile={self.base_flagfile}", *overrides(values), *extra])

  def run_trial(self, trial, *args, **kwargs):  # pylint: disable=unused-argument
    import keras_tuner  # pylint: disable=import-outside-toplevel
    from vsep_tf.training import trainer as trainer_lib  # pylint: disable=import-outside-toplevel
    hp = trial.hyperparameters
    for spec in self.space:
      declare(hp, spec)
    cfg = self.trial_flags(trial)
    parent = hp.values.get("tuner/trial_id")
    if parent and not os.path.exists(cfg.model_dir):  # Hyperband: continue the parent's checkpoints
      shutil.copytree(self.trial_model_dir(parent), cfg.model_dir)
    logging.info("trial %s: %s", trial.trial_id, " ".join(overrides(hp.values)))
    t0 = time.perf_counter()
    try:
      trainer = trainer_lib.get_trainer(cfg.job)(cfg, self.strategy)
      run_flags.save_config(cfg, cfg.model_dir)
      metrics = dict(trainer.train())
    except (FloatingPointError, ValueError, tf_errors()) as e:
      raise keras_tuner.errors.FailedTrialError(f"trial {trial.trial_id}: {e}") from e
    if self.objective_name == "valid_nll":
      sigmas = [float(s) for s in self.fv.tune_valid_sigmas]
      per_class = valid_nll(trainer, sigmas, self.fv.tune_valid_examples)
      metrics.update({f"valid_nll/{k}": v for k, v in per_class.items()})
      metrics["valid_nll"] = sum(per_class.values()) / len(per_class)
    elif self.objective_name == "valid_si_sdr":
      scores = trainer.validate()
      metrics.update({f"valid_si_sdr/{k}": float(v) for k, v in scores.items()})
      metrics["valid_si_sdr"] = sum(float(v) for v in scores.values()) / len(scores)
    elif self.objective_name == "valid_sdr":
      metrics.update(self.valid_sdr_metrics(trial, cfg))
    self.durations[trial.trial_id] = time.perf_counter() - t0
    metrics["seconds"] = self.durations[trial.trial_id]
    return {k: float(v) for k, v in metrics.items() if k != "steps/s"}

  def valid_sdr_metrics(self, trial, cfg) -> dict:
    """Separates and scores the valid split with the trial's model dir (tune.valid_sdr); writes the result JSON
    next to the model. Metrics: valid_sdr (overall), valid_sdr/<source>, valid_si_sdr, valid_seconds."""
    import keras_tuner  # pylint: disable=import-outside-toplevel
    fv = self.fv
    t0 = time.perf_counter()
    try:
      opts = valid_eval_options(cfg, fv.tune_valid_seconds, fv.tune_valid_examples, fv.tune_valid_workers)
      result = valid_sdr(cfg.model_dir, opts, fv.tune_valid_override)
    except (FloatingPointError, ValueError, tf_errors()) as e:
      raise keras_tuner.errors.FailedTrialError(f"trial {trial.trial_id}: valid SDR: {e}") from e
    overall = result["overall"].get("sdr")
    if overall is None or not math.isfinite(overall):
      raise keras_tuner.errors.FailedTrialError(f"trial {trial.trial_id}: valid SDR {overall} (no finite score)")
    path = os.path.join(os.path.dirname(cfg.model_dir), "valid_sdr.json")
    config_lib.atomic_write_text(path, json.dumps(result, indent=1, allow_nan=False) + "\n")
    out = {"valid_sdr": float(overall), "valid_seconds": time.perf_counter() - t0}
    out.update({f"valid_sdr/{k}": float(v["sdr"]) for k, v in result["sources"].items() if v.get("sdr") is not None})
    if result["overall"].get("si_sdr") is not None:
      out["valid_si_sdr"] = float(result["overall"]["si_sdr"])
    logging.info("trial %s: valid SDR %.3f dB on %d tracks (%s) in %.1f s", trial.trial_id, overall,
                 result["num_tracks"], ", ".join(result["tracks"]), out["valid_seconds"])
    return out

  def save_model(self, trial_id, model, step=0):
    del trial_id, model, step  # the trainer checkpoints into the trial's model dir

  def load_model(self, trial):
    raise NotImplementedError(f"restore trial {trial.trial_id} with vsep_tf.model_dir.load_separator "
                              f"from {self.trial_model_dir(trial.trial_id)}")

  def on_trial_end(self, trial):
    super().on_trial_end(trial)
    write_csv(self, os.path.join(self.project_dir, "trials.csv"))


def tf_errors():
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  return tf.errors.InvalidArgumentError


def make_tuner(fv, strategy=None, base_flagfile=None):
  """A VsepTuner (keras_tuner.Tuner subclass) for the search flags in `fv`."""
  import keras_tuner  # pylint: disable=import-outside-toplevel
  objective_name = resolve_objective(fv)
  objective = keras_tuner.Objective(objective_name, OBJECTIVES[objective_name])
  space = tuple(fv.hp) or default_space(fv)
  for spec in space:
    parse_hp(spec)  # fail before any trial
  if objective_name == "valid_sdr":
    valid_eval_options(fv, fv.tune_valid_seconds, fv.tune_valid_examples, fv.tune_valid_workers)  # fail early
    warn_prior_split(fv)
  hps = keras_tuner.HyperParameters()
  for spec in space:
    declare(hps, spec)
  common = dict(objective=objective, hyperparameters=hps, seed=fv.seed)
  if fv.tuner == "random":
    oracle = keras_tuner.oracles.RandomSearchOracle(max_trials=fv.max_trials, **common)
  elif fv.tuner == "bayesian":
    oracle = keras_tuner.oracles.BayesianOptimizationOracle(
        max_trials=fv.max_trials, num_initial_points=fv.bayesian_initial_points, **common)
  else:
    oracle = keras_tuner.oracles.HyperbandOracle(max_epochs=fv.hyperband_max_epochs,
                                                 factor=fv.hyperband_factor, **common)
  project = fv.project_name or f"{fv.job}_{fv.prior if fv.job == 'priors' else fv.job}"
  cls = type("VsepTuner", (_TunerMixin, _tuner_base()), {})
  tuner = cls(oracle=oracle, directory=fv.tune_dir, project_name=project, overwrite=fv.overwrite)
  os.makedirs(tuner.project_dir, exist_ok=True)
  if base_flagfile is None:
    base_flagfile = os.path.join(tuner.project_dir, "base.flags")
    config_lib.atomic_write_text(base_flagfile, config_lib.flagfile_text(run_flags.config_from_flags(fv)))
  tuner.setup(fv, strategy, base_flagfile, space, objective_name)
  return tuner


# ------------------------------------------------------------------------------------------------ results
def trial_rows(tuner) -> list:
  """One dict per trial, in creation order: trial_id, status, objective, hyperparameters, other metrics."""
  rows = []
  trials = sorted(tuner.oracle.trials.values(), key=lambda t: int(t.trial_id) if t.trial_id.isdigit() else 0)
  for t in trials:
    row = {"trial_id": t.trial_id, "status": t.status, "objective": None}
    for name in t.metrics.metrics:
      value = t.metrics.get_best_value(name)
      row["objective" if name == tuner.objective_name else name] = value
    row.update({k: v for k, v in t.hyperparameters.values.items()})
    rows.append(row)
  return rows


def write_csv(tuner, path: str) -> str:
  rows = trial_rows(tuner)
  keys = ["trial_id", "status", "objective"]
  for row in rows:
    keys += [k for k in row if k not in keys]
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
  os.replace(tmp, path)
  return path


def plot_trials(tuner, path: str) -> str:
  """Objective vs trial (completed trials) with the best-so-far line (matplotlib Agg, imported lazily)."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  rows = [r for r in trial_rows(tuner) if r["objective"] is not None]
  xs = [int(r["trial_id"]) if str(r["trial_id"]).isdigit() else i for i, r in enumerate(rows)]
  ys = [r["objective"] for r in rows]
  better = min if OBJECTIVES[tuner.objective_name] == "min" else max
  best = [better(ys[:i + 1]) for i in range(len(ys))]
  fig, ax = plt.subplots(figsize=(6, 3.5))
  ax.plot(xs, ys, "o", label="trial")
  ax.step(xs, best, where="post", label="best so far")
  ax.set_xlabel("trial")
  ax.set_ylabel(tuner.objective_name)
  ax.legend()
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def best_trial(tuner):
  """The best COMPLETED trial with an objective value, or None (KerasTuner's get_best_trials pads its answer with
  failed trials when fewer completed)."""
  for trial in tuner.oracle.get_best_trials(len(tuner.oracle.trials) or 1):
    if trial.status == "COMPLETED" and trial.metrics.exists(tuner.objective_name):
      return trial
  return None


def write_best_flagfile(tuner, path: str, model_dir: str):
  """The best trial's full resolved config as a flagfile for `vsep_tf.train`. None when no trial completed."""
  trial = best_trial(tuner)
  if trial is None:
    return None
  cfg = tuner.trial_flags(trial).replace(model_dir=model_dir)
  value = trial.metrics.get_best_value(tuner.objective_name)
  header = (f"# Best of {len(tuner.oracle.trials)} trials ({tuner.fv.tuner} search, {tuner.project_dir}): trial "
            f"{trial.trial_id}, {tuner.objective_name}={value:.4f}\n"
            f"#   python -m vsep_tf.train --flagfile={path}\n"
            f"# hyperparameters: {' '.join(overrides(trial.hyperparameters.values))}\n")
  config_lib.atomic_write_text(path, header + config_lib.flagfile_text(cfg))
  return path


def search(fv, strategy=None) -> dict:
  """Runs (or continues) the search and writes the results. Returns {'best': path, 'csv': ..., 'plot': ...,
  'best_value': ..., 'tuner': tuner}."""
  tuner = make_tuner(fv, strategy)
  tuner.search()
  project = tuner.project_dir
  out = {"tuner": tuner, "csv": write_csv(tuner, os.path.join(project, "trials.csv"))}
  out["best"] = write_best_flagfile(tuner, os.path.join(project, "best.flags"), os.path.join(project, "best_model"))
  completed = [r for r in trial_rows(tuner) if r["objective"] is not None]
  out["plot"] = plot_trials(tuner, os.path.join(project, "trials.png")) if completed else None
  best = best_trial(tuner)
  out["best_value"] = best.metrics.get_best_value(tuner.objective_name) if best is not None else None
  return out


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from vsep_tf.training import strategy as strategy_lib  # pylint: disable=import-outside-toplevel
  strategy = strategy_lib.get_strategy(FLAGS.strategy, FLAGS.num_cpu_devices)  # before any TF op
  out = search(FLAGS, strategy)
  print(f"best {out['tuner'].objective_name}={out['best_value']} flagfile={out['best']} csv={out['csv']} "
        f"plot={out['plot']}", flush=True)


def run():
  define_tune_flags(FLAGS)
  app.run(main)


if __name__ == "__main__":
  sys.exit(run())
