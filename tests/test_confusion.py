import pytest
"""Prior confusion tables: the arithmetic against numpy, and the tool end to end on a trained model dir."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

from vsep_tf.evaluation import confusion
from vsep_tf.priors.base import Prior
from vsep_tf import run_flags
from vsep_tf.training import trainer as trainer_lib

REPO = Path(__file__).resolve().parents[1]


class IidGaussianPrior(Prior):
  """A closed-form prior for checking the table arithmetic: x_t ~ N(mean, 1 + sigma^2) i.i.d."""

  def __init__(self, mean):
    super().__init__()
    self.mean = float(mean)

  def log_prob(self, x, sigma, training=False):
    var = 1.0 + tf.square(sigma)[:, None]
    return tf.reduce_sum(-0.5 * tf.square(x - self.mean) / var - 0.5 * tf.math.log(2 * np.pi * var), axis=1)


def test_table_matches_numpy_and_ranks():
  priors = {"low": IidGaussianPrior(-1.0), "high": IidGaussianPrior(1.0)}
  rng = np.random.default_rng(0)
  examples = {"low": (rng.standard_normal([6, 50]) - 1.0).astype(np.float32),
              "high": (rng.standard_normal([6, 50]) + 1.0).astype(np.float32)}
  table, scores = confusion.log_likelihood_table(priors, examples, [0.0], batch_size=4, per_example=True)
  for k, (pname, prior) in enumerate(priors.items()):
    for j, dname in enumerate(examples):
      x = examples[dname]
      ref = np.mean(-0.5 * (x - prior.mean) ** 2 - 0.5 * np.log(2 * np.pi))
      np.testing.assert_allclose(table[0, k, j], ref, rtol=1e-5)
  summary = confusion.summarize(table, list(priors))[0]
  assert summary["row_hits"] == 2 and summary["col_hits"] == 2 and summary["min_row_margin"] > 1.0
  np.testing.assert_array_equal(confusion.example_accuracy(scores), [[1.0, 1.0]])
  swapped = {"low": priors["high"], "high": priors["low"]}  # wrong priors must be caught
  bad = confusion.summarize(confusion.log_likelihood_table(swapped, examples, [0.0]), ["low", "high"])[0]
  assert bad["row_hits"] == 0 and bad["min_row_margin"] < 0
  assert "**" in confusion.format_table(table, list(priors), [0.0])


@pytest.mark.slow  # long: the slow lane (pytest -m slow, a CI lane of its own)
def test_tool_on_a_trained_model_dir(tmp_path):
  cfg = run_flags.parse_flags([
      f"--model_dir={tmp_path / 'm'}", "--job=priors", "--dataset=toy", "--crop_length=256", "--batch_size=2",
      "--train_steps=4", "--steps_per_loop=2", "--checkpoint_every=4", "--audio_summary_seconds=0",
      "--wavenet.num_blocks=1", "--wavenet.num_layers=2", "--wavenet.residual_channels=4",
      "--wavenet.skip_channels=4", "--wavenet.cond_channels=4", "--wavenet.num_mixtures=2"])
  trainer_lib.PriorTrainer(cfg).train()
  out = tmp_path / "out"
  cmd = [sys.executable, "-m", "tools.prior_confusion", f"--model_dir={tmp_path / 'm'}", "--num_examples=3",
         "--sigmas=0,0.1", f"--output_md={out}.md", f"--output_png={out}.png", f"--output_json={out}.json"]
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(Path(f"{out}.json").read_text())
  assert result["sources"] == ["sine", "square", "sawtooth", "triangle"]
  assert np.array(result["table"]).shape == (2, 4, 4) and np.isfinite(result["table"]).all()
  assert Path(f"{out}.png").read_bytes()[:4] == b"\x89PNG"
  assert "sigma = 0.1" in Path(f"{out}.md").read_text()
  # the trained toy seed is refused as a held-out seed
  proc = subprocess.run(cmd[:4] + ["--seed=0"], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0 and "trained on" in proc.stderr


def test_tonal_stats_separates_tones_from_noise():
  from vsep_tf.evaluation.confusion import tonal_stats  # pylint: disable=import-outside-toplevel
  rate = 14700
  t = np.arange(rate) / rate
  sine = np.stack([np.sin(2 * np.pi * f * t) for f in (110.0, 440.0)])
  noise = np.random.default_rng(0).standard_normal((2, rate))
  s, n = tonal_stats(sine, rate), tonal_stats(noise, rate)
  assert s["peak_share"] > 0.95 and n["peak_share"] < 0.01
  assert abs(s["peak_hz"] - 275.0) < 2.0  # the median of the two peaks (110 and 440 Hz)
  assert abs(s["peak_abs"] - 1.0) < 1e-3
