"""The shipped models (pretrained/): they load from their directories alone, separate held-out data better than
the mixture, and stay small."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from vsep_tf import data as data_lib
from vsep_tf import signal as signal_lib
from vsep_tf.model_dir import MANIFEST_FILENAME, PRIORS_SUBDIR, load_separator
from vsep_tf.separators.langevin import LangevinSeparator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRETRAINED = os.path.join(REPO, "pretrained")
SHIPPED = sorted(d for d in os.listdir(PRETRAINED) if os.path.isdir(os.path.join(PRETRAINED, d))) \
    if os.path.isdir(PRETRAINED) else []


def test_pretrained_is_small():
  total = sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(PRETRAINED) for f in files)
  # The budget for every shipped model together: 48 MiB (41 MiB since the WaveNet encoders: +6 MB of weights for
  # +0.4 dB (chorales) and +2.3 dB (band) in one pass).
  assert 0 < total <= 48 * 2 ** 20, total
  for name in SHIPPED:  # a manifest and a training log ship with every model
    assert os.path.exists(os.path.join(PRETRAINED, name, MANIFEST_FILENAME))
    assert os.path.exists(os.path.join(PRETRAINED, name, "train.log"))


@pytest.mark.slow  # research path (not the product's): the slow lane (pytest -m slow), for the 12-minute default run
def test_shipped_toy_priors_are_score_priors_for_langevin():
  assert load_separator(os.path.join(PRETRAINED, "toy_score")).method == "periodic"  # how toy_score separates
  sep = load_separator(os.path.join(PRETRAINED, "toy_score"),
                       ["--priors_search=langevin", "--langevin_levels=2", "--langevin_steps_per_level=1"])
  assert isinstance(sep, LangevinSeparator)
  assert all(not p.has_log_prob for p in sep.priors.values())
  m = tf.random.normal([1, 512]) * 0.3
  np.testing.assert_allclose(sep.separate(m).numpy().mean(1), m.numpy(), atol=1e-5)


@pytest.mark.slow  # research path (not the product's): the slow lane (pytest -m slow), for the 12-minute default run
def test_posterior_check_finds_the_truth_stable_under_the_shipped_toy_priors(tmp_path, tiny_priors_dir):
  """tools/posterior_check: started at the true sources plus noise, the sampler under the shipped toy score priors
  stays at them (held-out items); blind starts are reported, not asserted (they fail: README, diagnosis). With
  2 restarts the best-of-2 chain is at least as good as chain 0, and the energy ranking is reported."""
  out = tmp_path / "check.json"
  cmd = [sys.executable, "-m", "tools.posterior_check", "--prior_dir=pretrained/toy_score", "--num_examples=2",
         "--length=2048", "--levels=8", "--oracle_sigmas=0.05", "--restarts=2", "--energy_sigmas=0.02,1.0,3",
         "--permutations",
         f"--output_json={out}"]
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  report = json.loads(out.read_text())
  result = report["median_si_sdr"]
  assert set(result) == {"mixture", "blind", "blind_select2", "blind_best2", "oracle_0.05"}
  for name, value in result["oracle_0.05"].items():
    assert value > 15.0 and value > result["mixture"][name] + 10.0, result
  # With 2 items a median is a mean, so the per-item best chain (by mean SI-SDR) cannot lose on average.
  assert np.mean(list(result["blind_best2"].values())) >= np.mean(list(result["blind"].values())) - 0.01, result
  # Every other assignment of the true sources to the classes scores worse on at least one of the 2 items
  # (measured on 8 long crops: the truth ranks first on all, the sine/triangle swap next; README).
  perm = report["energy"]["permutations"]
  assert perm["truth_first"] >= 0.5, perm
  assert sorted(perm["runner_up"].split("/")) == sorted(result["mixture"]), perm
  # Priors without a denoiser (the WaveNet likelihood priors) are refused with a clear message and no output.
  bad = tmp_path / "bad.json"
  proc = subprocess.run([*cmd[:3], f"--prior_dir={tiny_priors_dir}", f"--output_json={bad}"], cwd=REPO,
                        capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode != 0 and "needs score priors" in proc.stderr and not bad.exists()


def _chorales_test_track_gain(sep, chorales, seconds=5):
  """SI-SDR improvements [N] of `sep` on the first `seconds` of the first chorale test track; checks that the
  estimates add up to the mix (every shipped chorale separator is mixture-consistent)."""
  data = data_lib.build_dataset("stems", root=str(chorales), mix="sum")
  _, mix, sources = next(iter(data.tracks("test")))
  n = seconds * data.sample_rate
  mix, sources = mix[:n], sources[:, :n]
  est = np.asarray(sep.separate_long(mix))
  np.testing.assert_allclose(est.sum(0), mix, atol=1e-3)
  return signal_lib.si_sdr_improvement(sources, est, np.broadcast_to(mix, sources.shape)).numpy()


def test_shipped_chorales_separator_beats_the_mixture_on_a_test_track(chorales_root):
  sep = load_separator(os.path.join(PRETRAINED, "chorales"))  # amortised encoder + MAP under the spectral priors
  assert sep.method == "spectral" and sep.mix == "sum" and sep.encoder is not None
  assert sep.settings["prior_weight"] == 0.3 and sep.settings["iterations"] == 300
  gain = _chorales_test_track_gain(sep, chorales_root)
  assert np.median(gain) > 6.0, gain
  priors_only = load_separator(os.path.join(PRETRAINED, "chorales", PRIORS_SUBDIR))
  assert priors_only.encoder is None and priors_only.source_names == sep.source_names


def test_shipped_toy_separator_meets_the_toy_target_on_held_out_items():
  """pretrained/toy (harmonic priors + pitch encoder, one TF graph) on the first 4 test items of data seed 1234
  (never trained on): median SI-SDR >= 15 dB for every class (40 items: 27.9 / 23.2 / 17.8 / 24.3, docs)."""
  sep = load_separator(os.path.join(PRETRAINED, "toy"))
  assert sep.method == "harmonic" and sep.mix == "mean" and sep.settings["median_frames"] == 0
  data = data_lib.build_dataset("toy", seed=1234)
  scores = []
  for _, mix, sources in data.tracks("test", limit=4):
    est = sep.separate(mix[None]).numpy()[0]
    np.testing.assert_allclose(est.mean(0), mix, atol=1e-3)
    scores.append(signal_lib.si_sdr(sources, est).numpy())
  assert np.all(np.median(scores, axis=0) >= 15.0), scores
