"""The shipped flagfiles parse, and the train entry point runs them end to end (toy, a stem folder, MUSDB layout)."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from absl import flags

from vsep_tf import audio
from vsep_tf import priors as priors_lib
from vsep_tf.training import config as config_lib

REPO = Path(__file__).resolve().parents[1]
# configs/tune_*.flags are search configs (python -m vsep_tf.tune; parsed in tests/test_tune.py): train flags
# plus the search flags, which the train parser rejects.
RUN_CONFIGS = sorted(p.name for p in (REPO / "configs").glob("*.flags") if not p.name.startswith("tune_"))
TINY = ["--wavenet.num_blocks=1", "--wavenet.num_layers=3", "--wavenet.residual_channels=4",
        "--wavenet.skip_channels=4", "--wavenet.cond_channels=4", "--wavenet.num_mixtures=2",
        "--crop_length=256", "--batch_size=2", "--train_steps=2", "--steps_per_loop=2", "--checkpoint_every=2",
        "--audio_summary_seconds=0"]


@pytest.mark.parametrize("name", RUN_CONFIGS)
def test_run_config_parses(name, monkeypatch):
  monkeypatch.chdir(REPO)  # nested --flagfile paths are relative to the repo root, as in the README commands
  fv = config_lib.define_flags(flags.FlagValues())
  fv(["x", f"--flagfile=configs/{name}"])
  assert fv.model_dir and fv.model_dir.startswith("runs/")
  assert fv.dataset in ("toy", "stems", "musdb") and fv.prior in priors_lib.PRIORS
  assert fv.crop_length % 64 == 0


def _train(tmp_path, *args, extra=()):
  """Runs `python -m vsep_tf.train` on `args` (a --flagfile first), shrunk by TINY, then `extra`."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  proc = subprocess.run([sys.executable, "-m", "vsep_tf.train", *args, f"--model_dir={tmp_path / 'model'}", *TINY,
                         *extra],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  model_dir = tmp_path / "model"
  assert (model_dir / config_lib.CONFIG_FILENAME).exists()
  assert (model_dir / "checkpoints" / "checkpoint").exists()
  return proc, config_lib.load_config(str(model_dir))


def _write_stem_tree(root, subsets_tracks, sources, rate, seconds=1.0):
  rng = np.random.default_rng(0)
  for subset, track in subsets_tracks:
    d = root / subset / track
    d.mkdir(parents=True)
    stems = []
    for k, s in enumerate(sources):
      t = np.arange(int(seconds * rate)) / rate
      x = (0.3 * np.sin(2 * np.pi * (110 * (k + 1)) * t) + 0.01 * rng.standard_normal(t.shape)).astype(np.float32)
      stems.append(x)
      audio.write_audio(str(d / f"{s}.wav"), x, rate)
    audio.write_audio(str(d / "mixture.wav"), np.sum(stems, axis=0), rate)


def test_train_toy_config_end_to_end(tmp_path):
  proc, fv = _train(tmp_path, "--flagfile=configs/toy.flags", extra=["--audio_summary_seconds=0.01"])
  assert "final " in proc.stdout and fv.dataset == "toy" and fv.crop_length == 256
  # The listening checks in TensorBoard: training data at step 0, a sample of every prior at the checkpoint.
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  tags = {v.tag for f in (tmp_path / "model" / "train").glob("events.out.tfevents.*")
          for e in tf.compat.v1.train.summary_iterator(str(f)) for v in e.summary.value}
  assert {f"{kind}/{name}" for kind in ("data", "samples") for name in ("sine", "square", "sawtooth", "triangle")
          } <= tags, tags


def test_train_on_any_stem_folder(tmp_path):
  _write_stem_tree(tmp_path / "stems", [("train", "a"), ("train", "b"), ("test", "c")], ("flute", "organ"), 8000)
  _, fv = _train(tmp_path, "--flagfile=configs/chorales.flags", f"--data_root={tmp_path / 'stems'}",
                 "--min_rms=0")
  assert fv.data_root == str(tmp_path / "stems")


def test_supervised_on_a_stem_folder_without_valid_split_checkpoints(tmp_path):
  """Separator trainers validate on 'valid' mixes; a train/test-only stem folder has none: train on, no crash."""
  _write_stem_tree(tmp_path / "stems", [("train", "a"), ("train", "b"), ("test", "c")], ("flute", "organ"), 8000)
  proc, fv = _train(tmp_path, "--flagfile=configs/chorales_supervised.flags", f"--data_root={tmp_path / 'stems'}",
                    "--min_rms=0", "--encoder.num_blocks=1", "--encoder.num_layers=2",
                    "--encoder.residual_channels=4", "--encoder.skip_channels=4")
  assert fv.job == "supervised" and "no 'valid' split" in proc.stderr


def test_train_musdb_config_on_a_tiny_musdb_folder(tmp_path):
  pytest.importorskip("musdb")
  _write_stem_tree(tmp_path / "musdb", [("train", "A - One"), ("test", "B - Two")],
                   ("vocals", "drums", "bass", "other"), 22050)
  proc, fv = _train(tmp_path, "--flagfile=configs/musdb.flags", f"--musdb_root={tmp_path / 'musdb'}")
  assert fv.dataset == "musdb" and fv.sample_rate == 22050
  assert "vocals" in proc.stdout and "drums" in proc.stdout


def test_train_rejects_missing_stem_root(tmp_path):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  proc = subprocess.run([sys.executable, "-m", "vsep_tf.train", "--flagfile=configs/chorales.flags",
                         f"--data_root={tmp_path / 'nope'}", f"--model_dir={tmp_path / 'm'}", *TINY],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0
  assert "does not exist" in proc.stderr
  assert not (tmp_path / "m" / config_lib.CONFIG_FILENAME).exists()
