"""The KerasTuner search over the project's own training loop: a tiny FLOW prior search end to end, resume,
results (best flagfile accepted by the train flag parser, CSV, plot), the --hp spec parser, and the spectral
encoder search by separation (valid_sdr) on a stem folder of real WAV files with a held-out track."""
import csv
import json
import math
import os

import keras_tuner
import pytest
from absl import flags

from tests.conftest import two_tone_stem_folder
from vsep_tf import tune
from vsep_tf import run_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY_FLOW = ["--prior=flow", "--flow.num_blocks=1", "--flow.flows_per_block=1", "--flow.width=4",
             "--flow.num_layers=2", "--flow.squeeze_first=2", "--crop_length=256", "--batch_size=2",
             "--train_steps=3", "--steps_per_loop=3", "--checkpoint_every=3", "--warmup_steps=1",
             "--audio_summary_seconds=0"]


def tune_flags(tune_dir, *extra):
  fv = tune.define_tune_flags(flags.FlagValues())
  fv(["tune", "--job=priors", "--dataset=toy", *TINY_FLOW, f"--tune_dir={tune_dir}", "--project_name=p",
      "--tuner=random", "--hp=learning_rate=float:1e-3:1e-2:log", "--hp=p_clean=choice:0.0|0.5",
      "--tune_valid_sigmas=0.1", "--tune_valid_examples=2", *extra])
  return fv


@pytest.mark.slow  # long: the slow lane (pytest -m slow, a CI lane of its own)
def test_flow_search_resumes_and_writes_a_train_flagfile(tmp_path):
  first = tune.search(tune_flags(tmp_path, "--max_trials=1"))
  project = tmp_path / "p"
  rows = list(csv.DictReader(open(project / "trials.csv", encoding="utf-8")))
  assert len(rows) == 1 and rows[0]["status"] == "COMPLETED", rows
  ckpt = project / f"trial_{rows[0]['trial_id']}" / "model" / "checkpoints" / "checkpoint"
  assert ckpt.exists()
  mtime = ckpt.stat().st_mtime_ns

  # Continue the same search (overwrite=False): the completed trial is kept, exactly one new trial runs.
  second = tune.search(tune_flags(tmp_path, "--max_trials=2"))
  rows = list(csv.DictReader(open(project / "trials.csv", encoding="utf-8")))
  assert [r["status"] for r in rows] == ["COMPLETED", "COMPLETED"], rows
  assert ckpt.stat().st_mtime_ns == mtime  # the first trial did not run again
  assert len(second["tuner"].oracle.trials) == 2
  assert all(float(r["objective"]) == float(r["objective"]) for r in rows)  # finite, not NaN
  assert os.path.getsize(second["plot"]) > 0
  best_value = min(float(r["objective"]) for r in rows)
  assert second["best_value"] == pytest.approx(best_value)
  del first

  # The best flagfile: accepted unchanged by the train flag parser, with the best trial's hyperparameters.
  best_row = min(rows, key=lambda r: float(r["objective"]))
  fv = run_flags.parse_flags([f"--flagfile={second['best']}"])  # what vsep_tf/train.py parses with
  assert fv.prior == "flow" and fv["flow.width"] == 4
  assert fv.learning_rate == pytest.approx(float(best_row["learning_rate"]))
  assert fv.p_clean == pytest.approx(float(best_row["p_clean"]))
  assert fv.model_dir == str(project / "best_model")
  assert fv.train_steps == 3 and fv.job == "priors"


def test_hp_specs_and_overrides():
  hp = keras_tuner.HyperParameters()
  assert tune.declare(hp, "wavenet.residual_channels=choice:8|16") in (8, 16)
  assert 1e-4 <= tune.declare(hp, "learning_rate=float:1e-4:1e-2:log") <= 1e-2
  assert tune.declare(hp, "wavenet.num_layers=int:6:12:2") in (6, 8, 10, 12)
  args = tune.overrides({**hp.values, "tuner/epochs": 3})
  assert not any(a.startswith("--tuner/") for a in args)
  fv = run_flags.parse_flags(args)  # every override is a valid project flag
  assert fv["wavenet.residual_channels"] == hp.values["wavenet.residual_channels"]
  with pytest.raises(ValueError, match="not a vsep-tf flag"):
    tune.parse_hp("no_such_flag=float:0:1")
  with pytest.raises(ValueError, match="kind"):
    tune.parse_hp("learning_rate=normal:0:1")


def test_tune_toy_flagfile_parses():
  fv = tune.define_tune_flags(flags.FlagValues())
  cwd = os.getcwd()
  os.chdir(REPO)
  try:
    fv(["tune", "--flagfile=configs/research/tune_toy.flags"])
  finally:
    os.chdir(cwd)
  space = tuple(fv.hp) or tune.default_space(fv)
  for spec in space:
    tune.parse_hp(spec)
  assert fv.job == "priors" and fv.prior == "wavenet" and tune.resolve_objective(fv) == "valid_nll"
  assert fv.model_dir.startswith("runs/") and fv.tune_dir.startswith("runs/")


def test_chorales_spectral_flagfile_parses():
  fv = tune.define_tune_flags(flags.FlagValues())
  cwd = os.getcwd()
  os.chdir(REPO)
  try:
    fv(["tune", "--flagfile=configs/research/tune_chorales_spectral.flags"])
  finally:
    os.chdir(cwd)
  assert fv.job == "spectral_encoder" and tune.resolve_objective(fv) == "valid_sdr" and fv.valid_tracks == 4
  assert fv.prior_dir == "runs/chv4_base/priors" and fv.tune_valid_override == ["--spectral_search.iterations=0"]
  assert fv["spectral_search.iterations"].value == 300  # the recipe's MAP stays in the trials' saved config
  assert tuple(fv.hp) == () and tune.default_space(fv) == tune.SPECTRAL_ENCODER_SPACE
  opts = tune.valid_eval_options(fv)
  assert opts.split == "valid" and opts.valid_tracks == 4 and opts.dataset == "stems" and opts.mix == "sum"


def test_spectral_spaces_are_project_flags_and_auto_picks_valid_sdr():
  for job in tune.SPECTRAL_JOBS:
    fv = tune.define_tune_flags(flags.FlagValues())
    fv(["tune", f"--job={job}", "--dataset=stems", "--data_root=/nowhere"])
    assert tune.resolve_objective(fv) == "valid_sdr"
    hp = keras_tuner.HyperParameters()
    values = {tune.parse_hp(spec)[0]: tune.declare(hp, spec) for spec in tune.default_space(fv)}
    cfg = run_flags.parse_flags(tune.overrides(hp.values))  # every override is a valid project flag
    assert all(cfg[name] == value for name, value in values.items())
    with pytest.raises(ValueError, match="--valid_tracks"):  # never the test split
      tune.valid_eval_options(fv)
  toy = tune.valid_eval_options(run_flags.parse_flags(["--job=spectral", "--dataset=toy", "--toy_seed=3"]),
                                max_seconds=1.5, num_examples=4)
  assert (toy.dataset, toy.split, toy.toy_seed, toy.limit, toy.max_seconds) == ("toy", "valid", 3, 4, 1.5)
  assert {"spectral_encoder.arch", "spectral_encoder.wavenet_layers", "encoder_objective",
          "spectral_search.prior_weight"} <= {tune.parse_hp(s)[0] for s in tune.SPECTRAL_ENCODER_SPACE}


def _stem_folder(root):
  return two_tone_stem_folder(root, notes=8)


@pytest.fixture(scope="module")
def spectral_priors(tmp_path_factory):
  """(stem folder, --job=spectral priors dir) trained in seconds with one train track held out."""
  from vsep_tf.training import trainer as trainer_lib  # pylint: disable=import-outside-toplevel
  root = _stem_folder(tmp_path_factory.mktemp("stems"))
  prior_dir = tmp_path_factory.mktemp("priors") / "spectral"
  cfg = run_flags.parse_flags([
      f"--model_dir={prior_dir}", "--job=spectral", "--dataset=stems", f"--data_root={root}", "--valid_tracks=1",
      "--train_steps=150", "--batch_size=64", "--learning_rate=3e-3", "--grad_clip_norm=0", "--steps_per_loop=50",
      "--checkpoint_every=150", "--warmup_steps=10", "--spectral.n_fft=512", "--spectral.hop=128",
      "--spectral.latent_dim=4", "--spectral.hidden_units=64"])
  trainer_lib.get_trainer("spectral")(cfg, None).train()
  run_flags.save_config(cfg, str(prior_dir))
  return root, prior_dir


def test_spectral_encoder_search_by_valid_sdr(spectral_priors, tmp_path):
  from vsep_tf import evaluate as evaluate_lib  # pylint: disable=import-outside-toplevel
  root, prior_dir = spectral_priors
  fv = tune.define_tune_flags(flags.FlagValues())
  fv(["tune", "--job=spectral_encoder", f"--prior_dir={prior_dir}", "--dataset=stems", f"--data_root={root}",
      "--valid_tracks=1", "--crop_length=8000", "--batch_size=4", "--train_steps=20", "--steps_per_loop=10",
      "--checkpoint_every=20", "--warmup_steps=2", "--grad_clip_norm=0", "--audio_summary_seconds=0",
      f"--tune_dir={tmp_path}", "--project_name=enc", "--tuner=random", "--max_trials=2",
      "--hp=spectral_encoder.arch=choice:conv|wavenet", "--hp=spectral_encoder.hidden_units=choice:16|32",
      "--hp=spectral_encoder.wavenet_layers=int:2:3", "--hp=learning_rate=float:1e-3:3e-3:log",
      "--hp=encoder_objective=choice:elbo|map", "--tune_valid_override=--spectral_search.iterations=0",
      "--tune_valid_seconds=2"])
  assert tune.resolve_objective(fv) == "valid_sdr"
  out = tune.search(fv)
  project = tmp_path / "enc"
  rows = list(csv.DictReader(open(project / "trials.csv", encoding="utf-8")))
  assert [r["status"] for r in rows] == ["COMPLETED", "COMPLETED"], rows
  held_out = sorted(p.name for p in (root / "train").iterdir())
  for row in rows:
    sdr = float(row["objective"])
    assert math.isfinite(sdr) and sdr == pytest.approx(float(row["valid_sdr/sine"]) / 2
                                                       + float(row["valid_sdr/square"]) / 2)
    result = json.load(open(project / f"trial_{row['trial_id']}" / "valid_sdr.json", encoding="utf-8"))
    # scored on the held-out track only, its first 2 s, one pass of the encoder, as vsep_tf.evaluate scores
    assert result["split"] == "valid" and result["num_tracks"] == 1 and result["tracks"][0] in held_out
    assert result["audio_seconds"] == pytest.approx(2.0) and result["separator"]["iterations"] == 0
    assert result["overall"]["sdr"] == pytest.approx(sdr)
  # the objective is vsep_tf.evaluate's own number for the trial's model dir (same data, same override)
  best_row = max(rows, key=lambda r: float(r["objective"]))
  opts = evaluate_lib.EvalOptions(dataset="stems", split="valid", data_root=str(root), valid_tracks=1,
                                  max_seconds=2.0, num_workers=0)
  again = evaluate_lib.evaluate(opts, model_dir=str(project / f"trial_{best_row['trial_id']}" / "model"),
                                model_flags=["--spectral_search.iterations=0"], verbose=0)
  assert again["overall"]["sdr"] == pytest.approx(float(best_row["objective"]), abs=1e-3)
  assert out["best_value"] == pytest.approx(float(best_row["objective"]))
  cfg = run_flags.parse_flags([f"--flagfile={out['best']}"])  # the winner, as vsep_tf.train parses it
  assert cfg.job == "spectral_encoder" and cfg.prior_dir == str(prior_dir) and cfg.valid_tracks == 1
  assert cfg["spectral_encoder.arch"] == best_row["spectral_encoder.arch"]
  assert cfg.learning_rate == pytest.approx(float(best_row["learning_rate"]))
  assert cfg.model_dir == str(project / "best_model")


def test_best_trial_skips_failed_trials():
  """KerasTuner's get_best_trials pads with FAILED trials when fewer completed: the best flagfile and the
  reported best value come from completed trials only (None when none completed)."""
  from keras_tuner.src.engine import trial as trial_module  # pylint: disable=import-outside-toplevel

  def make(trial_id, status, value=None):
    t = trial_module.Trial(keras_tuner.HyperParameters(), trial_id=trial_id, status=status)
    if value is not None:
      t.metrics.register("valid_sdr", direction="max")
      t.metrics.update("valid_sdr", value)
      t.score = value
    return t

  class Oracle:
    objective = keras_tuner.Objective("valid_sdr", "max")
    get_best_trials = keras_tuner.Oracle.get_best_trials

    def __init__(self, trials):
      self.trials = {t.trial_id: t for t in trials}

  class Tuner:
    objective_name = "valid_sdr"

    def __init__(self, trials):
      self.oracle = Oracle(trials)

  assert tune.best_trial(Tuner([make("0", "FAILED")])) is None
  both = Tuner([make("0", "FAILED"), make("1", "COMPLETED", 3.5), make("2", "COMPLETED", 4.5)])
  assert tune.best_trial(both).trial_id == "2"
