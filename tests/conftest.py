"""Test session set-up: split the CPU into 2 logical devices before TensorFlow initialises, so MirroredStrategy
tests run real synchronous data parallelism on this CPU-only machine (the default strategy uses /CPU:0)."""
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
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


# Two tone classes (sine, square) as a stem folder: the spectral tests' (and the tuner's) small real-WAV data set.
TONE_RATE = 8000
TONE_PITCHES = 110.0 * 2.0 ** (np.arange(0, 24, 2) / 12)  # a whole-tone grid over two octaves


def tone(kind: str, f: float, seconds: float, rng, rate: int = TONE_RATE) -> np.ndarray:
  """A sine or square tone at f Hz with a random phase and amplitude in [0.1, 0.3)."""
  t = np.arange(int(seconds * rate)) / rate
  phase = 2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)
  x = np.sin(phase) if kind == "sine" else np.sign(np.sin(phase))
  return (rng.uniform(0.1, 0.3) * x).astype(np.float32)


def two_tone_stem_folder(root: Path, num_tracks: int = 4, notes: int = 16) -> Path:
  """root/train/<track>/{sine,square,mixture}.wav: solo sequences of 0.5 s notes of the two classes and their sum."""
  from vsep_tf import audio  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  for i in range(num_tracks):
    d = root / "train" / f"track{i}"
    d.mkdir(parents=True)
    stems = {kind: np.concatenate([tone(kind, rng.choice(TONE_PITCHES), 0.5, rng) for _ in range(notes)])
             for kind in ("sine", "square")}
    for kind, x in stems.items():
      audio.write_audio(str(d / f"{kind}.wav"), x, TONE_RATE)
    audio.write_audio(str(d / "mixture.wav"), stems["sine"] + stems["square"], TONE_RATE)
  return root
