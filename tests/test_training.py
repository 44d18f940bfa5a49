"""The custom training loop: loss falls, config round trip; resume and MirroredStrategy matching the default
strategy (-m slow)."""
import os

import numpy as np
import pytest
import tensorflow as tf

from vsep_tf import model_dir as model_dir_lib
from vsep_tf import registry
from vsep_tf import run_flags
from vsep_tf.training import strategy as strategy_lib
from vsep_tf.training import trainer as trainer_lib

TINY_WAVENET = ["--prior=wavenet", "--wavenet.num_blocks=1", "--wavenet.num_layers=4",
                "--wavenet.residual_channels=8", "--wavenet.skip_channels=8", "--wavenet.num_mixtures=2"]


def make_flags(model_dir, *extra):
  return run_flags.parse_flags([
      f"--model_dir={model_dir}", "--job=priors", "--dataset=toy", "--crop_length=512", "--batch_size=4",
      "--steps_per_loop=5", "--checkpoint_every=10", "--warmup_steps=1", "--learning_rate=3e-3",
      "--audio_summary_seconds=0", *TINY_WAVENET, *extra])


def test_config_round_trip(tmp_path):
  cfg = make_flags(tmp_path, "--wavenet.residual_channels=12", "--train_steps=7")
  run_flags.save_config(cfg, str(tmp_path))
  text = (tmp_path / run_flags.CONFIG_FILENAME).read_text()
  assert "--wavenet.residual_channels=12" in text and "--train_steps=7" in text
  assert "--flagfile" not in text and "--logtostderr" not in text  # only this project's flags
  back = run_flags.load_run_config(str(tmp_path))
  for name in run_flags.project_flag_names():
    assert back[name] == cfg[name], name
  assert registry.factory_kwargs(back, "wavenet")["residual_channels"] == 12


def test_load_config_rejects_non_model_dir(tmp_path):
  with pytest.raises(FileNotFoundError, match="not a training run directory"):
    run_flags.load_run_config(str(tmp_path))
  with pytest.raises(model_dir_lib.ModelDirError, match="not a vsep-tf model directory"):
    model_dir_lib.load_config(str(tmp_path))


def test_smoke_training_loss_falls(tmp_path):
  cfg = make_flags(tmp_path, "--train_steps=60", "--p_clean=1.0")
  trainer = trainer_lib.PriorTrainer(cfg)
  first = trainer.train(num_steps=5)["total_loss"]
  last = trainer.train()["total_loss"]
  assert int(trainer.step.numpy()) == 60
  assert np.isfinite(last) and last < first - 0.5, (first, last)
  assert tf.train.latest_checkpoint(os.path.join(tmp_path, "checkpoints")).endswith("ckpt-60")
  assert (tmp_path / model_dir_lib.MANIFEST_FILENAME).exists()


@pytest.mark.slow  # ~50 s (two trainers traced); resume stays in the default run via the spectral separator's rerun
def test_resume_continues_from_checkpoint(tmp_path):
  first = trainer_lib.PriorTrainer(make_flags(tmp_path, "--train_steps=20"))
  first.train()
  trained = [v.numpy().copy() for v in first.variables]
  resumed = trainer_lib.PriorTrainer(make_flags(tmp_path, "--train_steps=30", "--seed=5"))
  assert not all(np.allclose(a, v.numpy()) for a, v in zip(trained, resumed.variables))  # fresh init
  assert resumed.initialize_or_restore(next(iter(resumed.dataset)))
  assert int(resumed.step.numpy()) == 20
  for a, v in zip(trained, resumed.variables):
    np.testing.assert_array_equal(a, v.numpy())
  resumed.train()
  assert int(resumed.step.numpy()) == 30
  assert tf.train.latest_checkpoint(os.path.join(tmp_path, "checkpoints")).endswith("ckpt-30")


@pytest.mark.slow  # 60-80 s, most of it tracing the replicated step: the slow lane
def test_mirrored_matches_default_strategy(tmp_path):
  """Same data, same init, deterministic loss (p_clean=1: no noise): 2 replicas == 1 device."""
  assert len(tf.config.list_logical_devices("CPU")) >= 2, "conftest splits the CPU into 2 logical devices"
  results = {}
  for name in ("default", "mirrored"):
    strategy = strategy_lib.get_strategy(name, num_cpu_devices=2)
    cfg = make_flags(tmp_path / name, "--train_steps=10", "--p_clean=1.0", "--seed=3")
    trainer = trainer_lib.PriorTrainer(cfg, strategy)
    assert trainer.strategy.num_replicas_in_sync == (2 if name == "mirrored" else 1)
    losses = [trainer.train(num_steps=5)["total_loss"], trainer.train(num_steps=5)["total_loss"]]
    results[name] = (losses, [v.numpy() for v in trainer.variables])
  (l_def, w_def), (l_mir, w_mir) = results["default"], results["mirrored"]
  np.testing.assert_allclose(l_def, l_mir, rtol=1e-4, atol=1e-4)
  for a, b in zip(w_def, w_mir):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
