"""Test session set-up: split the CPU into 2 logical devices before TensorFlow initialises, so MirroredStrategy
tests run real synchronous data parallelism on this CPU-only machine (the default strategy uses /CPU:0)."""
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from vsep_tf.training import strategy as strategy_lib  # noqa: E402

strategy_lib.configure_cpu_devices(2)

REPO = Path(__file__).resolve().parents[1]
CHORALES = REPO.parent / "shared" / "data" / "chorales"
BAND = REPO.parent / "shared" / "data" / "band"


def require_chorales(path=CHORALES) -> Path:
  """`path` (../shared/data/chorales, ../shared/data/band or a folder in them) if present. Missing: the calling
  test FAILS under CI (the env var CI is set: CI has ../shared beside the clone, so a missing folder is a broken
  set-up, not a reason to pass quietly) and is skipped elsewhere, with the reason."""
  path = Path(path)
  if not path.exists():
    message = (f"{path} is missing: this test needs ../shared/data beside the repository (a copy of shared/)")
    if os.environ.get("CI"):
      pytest.fail(f"CI is set but {message}", pytrace=False)
    pytest.skip(message)
  return path


@pytest.fixture
def chorales_root():
  return require_chorales()


# Tiny model directories made by the real trainer (in-process: no second TensorFlow start-up), shared by the
# inference and export tests. A few steps only: the weights are near their initialisation, which is all that
# parity, chunking and I/O tests need.
TINY_ENCODER_FLAGS = ["--train_steps=4", "--crop_length=1024", "--batch_size=2", "--steps_per_loop=2",
                      "--checkpoint_every=4", "--encoder.num_blocks=1", "--encoder.num_layers=3",
                      "--encoder.residual_channels=8", "--encoder.skip_channels=8", "--valid_examples=2"]
TINY_PRIOR_FLAGS = ["--train_steps=2", "--crop_length=512", "--batch_size=2", "--steps_per_loop=2",
                    "--checkpoint_every=2", "--wavenet.num_blocks=1", "--wavenet.num_layers=3",
                    "--wavenet.residual_channels=8", "--wavenet.skip_channels=8", "--wavenet.cond_channels=8",
                    "--wavenet.num_mixtures=2", "--audio_summary_seconds=0"]


def train_tiny_model(model_dir, flagfile: str, extra=()) -> str:
  """Runs `python -m vsep_tf.train --flagfile=<flagfile> --model_dir=<model_dir> <extra>` in this process."""
  from vsep_tf import run_flags  # pylint: disable=import-outside-toplevel
  from vsep_tf.training import trainer as trainer_lib  # pylint: disable=import-outside-toplevel
  cfg = parse_config(flagfile, f"--model_dir={model_dir}", *extra)
  trainer_lib.get_trainer(cfg.job)(cfg).train()
  run_flags.save_config(cfg, cfg.model_dir)  # as vsep_tf.train does
  return str(model_dir)


def parse_config(flagfile: str, *extra):
  """The Config of `--flagfile=<flagfile> <extra>` (flagfile paths relative to the repository, as in the README)."""
  from vsep_tf import run_flags  # pylint: disable=import-outside-toplevel
  cwd = os.getcwd()
  os.chdir(REPO)  # flagfiles include each other by paths relative to the repository
  try:
    return run_flags.parse_flags([f"--flagfile={flagfile}", *extra])
  finally:
    os.chdir(cwd)


@pytest.fixture(scope="session")
def tiny_supervised_dir(tmp_path_factory):
  """A --job=supervised model directory (configs/research/toy_supervised.flags, 4 steps, 1 x 3-layer encoder of width 8)."""
  return train_tiny_model(tmp_path_factory.mktemp("tiny_supervised"), "configs/research/toy_supervised.flags",
                          TINY_ENCODER_FLAGS)


@pytest.fixture(scope="session")
def tiny_priors_dir(tmp_path_factory):
  """A --job=priors model directory (configs/research/toy_wavenet.flags, 2 steps, 1 x 3-layer WaveNet priors of width 8)."""
  return train_tiny_model(tmp_path_factory.mktemp("tiny_priors"), "configs/research/toy_wavenet.flags", TINY_PRIOR_FLAGS)
