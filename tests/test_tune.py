"""The KerasTuner search over the project's own training loop: a tiny FLOW prior search end to end, resume,
results (best flagfile accepted by the train flag parser, CSV, plot) and the --hp spec parser."""
import csv
import os

import keras_tuner
import pytest
from absl import flags

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


@pytest.mark.slow  # out of the default run and CI (15-minute budget); run with: pytest -m slow
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
