"""tools.refine_check (research: learned refinement steps after the amortised spectral encoder): a fresh refiner
is the encoder's answer, training on real mixes lowers the MAP objective below the encoder's, and its weights
come back from their checkpoint."""
import os

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import require_chorales, tone
from tools.refine_check import (INPUTS, LearnedRefiner, RefinedSeparator, checkpoint_path, gain_gradient,
                                map_objective, train_refiner)
from vsep_tf import signal as signal_lib
from vsep_tf.data import build_dataset
from vsep_tf.model_dir import load_separator
from vsep_tf.separators.spectral import mixture_objective

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHORALES = os.path.join(REPO, "pretrained", "chorales")

# A research check, not the product path: the slow lane (pytest -m slow), for the 12-minute default run.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def base():
  return load_separator(CHORALES, ["--spectral_search.phase_iterations=0"], quality="fast")


def _refiner(base, steps=2, hidden_units=16, inputs="gradient"):
  prior = next(iter(base.priors.values()))
  return LearnedRefiner(len(base.priors), prior.bins, prior.latent_dim, steps, hidden_units, inputs=inputs)


def _mix():
  """1 s of two tones at the chorale models' 16 kHz, [1, time]."""
  rng = np.random.default_rng(0)
  return (tone("sine", 440.0, 1.0, rng, 16000) + tone("square", 147.0, 1.0, rng, 16000))[None]


@pytest.mark.parametrize("inputs", INPUTS)
def test_a_fresh_refiner_is_the_encoders_one_pass(base, inputs):
  mix = _mix()
  refined = np.asarray(RefinedSeparator(base, _refiner(base, inputs=inputs)).separate(mix))
  np.testing.assert_allclose(refined, np.asarray(base.separate(mix)), atol=1e-5)
  np.testing.assert_allclose(refined.sum(1), mix, atol=1e-3)


def test_the_written_out_gain_gradient_is_autodiffs(base):
  x = tf.abs(signal_lib.stft(tf.constant(_mix()), base.n_fft, base.hop))
  z, a = base.initial_latents(x)
  a = a + tf.random.stateless_normal(tf.shape(a), [1, 2], stddev=0.5)  # away from the encoder's balance
  priors = list(base.priors.values())
  with tf.GradientTape() as tape:
    tape.watch(a)
    data = tf.reduce_sum(mixture_objective(priors, x, z, a, base.concentration)[1])
  _, written = gain_gradient(priors, x, z, a, base.concentration)
  expected = tape.gradient(data, a).numpy()
  np.testing.assert_allclose(written.numpy(), expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max())


def test_training_on_real_mixes_lowers_the_objective_and_restores(base, tmp_path):
  data = build_dataset("stems", root=str(require_chorales()), valid_tracks=4)
  refiner, history = train_refiner(base, data, steps=1, train_steps=80, batch_size=2, crop_length=16384,
                                   learning_rate=3e-3, hidden_units=16, seed=0, log_every=0)
  refined, start = np.array(history).T
  assert refined[0] == pytest.approx(start[0], rel=1e-5)  # zero-initialised: the encoder's answer
  # The last steps' batches (new mixes each): every one below the encoder's answer, 1 % or more in all.
  assert np.all(refined[-10:] < start[-10:]) and refined[-10:].sum() < 0.99 * start[-10:].sum()
  # On a mix it never saw (a test track), the refined latents explain it better than the encoder's.
  _, test_mix, _ = next(iter(build_dataset("stems", root=str(require_chorales())).tracks("test")))
  x = tf.abs(signal_lib.stft(tf.constant(test_mix[None, :16000 * 4], tf.float32), base.n_fft, base.hop))
  z0, a0 = base.initial_latents(x)
  priors = list(base.priors.values())
  z, a = refiner.refine(priors, x, z0, a0, base.concentration, base.settings["prior_weight"])
  assert float(map_objective(base, x, z, a)[0]) < float(map_objective(base, x, z0, a0)[0])
  tf.train.Checkpoint(refiner=refiner).write(checkpoint_path(str(tmp_path)))
  restored = _refiner(base, steps=1)
  tf.train.Checkpoint(refiner=restored).read(checkpoint_path(str(tmp_path))).assert_consumed()
  mix = _mix()
  np.testing.assert_allclose(RefinedSeparator(base, restored).separate(mix),
                             RefinedSeparator(base, refiner).separate(mix), atol=1e-6)


def test_refuses_a_separator_without_an_amortised_encoder():
  priors_only = load_separator(os.path.join(CHORALES, "priors"), ["--spectral_search.iterations=0"])
  with pytest.raises(ValueError, match="amortised encoder"):
    RefinedSeparator(priors_only, _refiner(priors_only))
