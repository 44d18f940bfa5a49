"""Score (denoising) prior: the Prior contract, Tweedie's score, learning, class discrimination, sampling,
and its use by the Langevin separator and the ELBO."""
import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf

from vsep_tf.priors import PRIORS
from vsep_tf.priors.base import sample_sigma
from vsep_tf.priors.score import ScorePrior, build_score_prior
from vsep_tf.separators import encoder as encoder_lib
from vsep_tf.separators.langevin import LangevinSeparator

SR = 14700
TINY = dict(num_blocks=1, num_layers=7, residual_channels=16, skip_channels=16, cond_channels=16)


def _prior(seed=0, **kw):
  keras.utils.set_random_seed(seed)
  return build_score_prior(**{**TINY, **kw})


def toy(kind, n, length, rng, low_key=37.0):
  """Thesis toy sources (sine or square): random phase, amplitude in [0.8, 1], key in [low_key, 64.9] (thesis:
  0.1; 37 = 220 Hz keeps a period well inside the tiny test priors' receptive field)."""
  f = 440.0 * 2.0 ** ((rng.uniform(low_key, 64.9, n) - 49.0) / 12.0)
  arg = 2 * np.pi * f[:, None] * np.arange(length)[None] / SR + rng.uniform(0, 2 * np.pi, n)[:, None]
  wave = np.sin(arg) if kind == "sine" else np.sign(np.sin(arg))
  return (rng.uniform(0.8, 1.0, n)[:, None] * wave).astype(np.float32)


def _train(prior, draw, steps, seed=0, batch=8, lr=3e-3, sigma_min=0.01, sigma_max=2.0):
  opt = keras.optimizers.Adam(lr)
  opt.build(prior.trainable_variables)

  @tf.function
  def step(x, sigma):
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(prior.compute_losses(x, sigma)["total_loss"])
    opt.apply_gradients(zip(tape.gradient(loss, prior.trainable_variables), prior.trainable_variables))
    return loss

  rng = np.random.default_rng(seed)
  tf.random.set_seed(seed)
  losses = [float(step(tf.constant(draw(batch, rng)), sample_sigma(batch, sigma_min, sigma_max, 0.0)))
            for _ in range(steps)]
  return prior, losses


def _snr(ref, est):
  return 10 * np.log10(np.sum(ref ** 2) / np.sum((ref - est) ** 2))


# ------------------------------------------------------------------------------------------- contract


def test_registered_and_factory_is_flag_ready():
  assert PRIORS["score"] is build_score_prior
  for name, p in inspect.signature(build_score_prior).parameters.items():
    assert p.default is not p.empty and type(p.default) in (int, float, bool), name


def test_score_is_tweedie_and_log_prob_is_refused():
  prior = _prior()
  x = tf.random.normal([2, 512])
  sigma = tf.constant([0.1, 0.7])
  d = prior.denoise(x, sigma)
  np.testing.assert_allclose(prior.score(x, sigma), (d - x) / sigma[:, None] ** 2, rtol=1e-4, atol=1e-4)
  # zero-initialised output: an untrained prior is the Gaussian(sigma_data) denoiser
  c_skip = 0.25 / (sigma.numpy() ** 2 + 0.25)
  np.testing.assert_allclose(d, c_skip[:, None] * x.numpy(), rtol=1e-5, atol=1e-6)
  assert not prior.has_log_prob
  with pytest.raises(NotImplementedError, match="score"):
    prior.log_prob(x, sigma)


def test_config_round_trip_and_non_causal_receptive_field():
  prior = _prior(kernel_size=3, num_layers=5)
  assert prior.receptive_field == 2 * 31 + 1
  clone = ScorePrior.from_config(prior.get_config())
  clone.set_weights(prior.get_weights())
  x = tf.random.normal([1, 300])
  np.testing.assert_allclose(clone.denoise(x, 0.3), prior.denoise(x, 0.3), atol=1e-6)
  # 'same' padding: a change at t = 150 reaches t +- (R - 1) / 2 and no further
  _, losses = _train(prior, lambda b, r: r.normal(size=[b, 256]).astype(np.float32), 3)
  y = x.numpy().copy()
  y[0, 150] += 1.0
  diff = np.abs(prior.denoise(y, 0.3).numpy() - prior.denoise(x, 0.3).numpy())[0]
  half = (prior.receptive_field - 1) // 2
  assert diff[150 - half:150 + half + 1].max() > 0 and diff[:150 - half].max() == 0 and diff[151 + half:].max() == 0


# ------------------------------------------------------------------------------------------- learning


@pytest.mark.slow  # research path (not the product's): the slow lane (pytest -m slow), for the 12-minute default run
def test_learns_the_gaussian_denoiser():
  """White N(0, 1) data: the optimal denoiser is x / (1 + sigma^2), not the zero-init x sd^2 / (sd^2 + sigma^2)."""
  prior, losses = _train(_prior(), lambda b, r: r.normal(size=[b, 512]).astype(np.float32), 300, lr=1e-2)
  assert np.mean(losses[-30:]) < np.mean(losses[:10])
  x = tf.random.normal([4, 2048], seed=3)
  for sigma in (0.3, 1.0):
    gain = float(tf.reduce_sum(prior.denoise(x, sigma) * x) / tf.reduce_sum(x * x))
    assert abs(gain - 1.0 / (1.0 + sigma ** 2)) < 0.05, (sigma, gain)


@pytest.fixture(scope="module")
def sine_and_square():
  length = 1024
  return {kind: _train(_prior(seed), lambda b, r, k=kind: toy(k, b, length, r), 250, seed=seed)[0]
          for seed, kind in enumerate(("sine", "square"))}


@pytest.mark.slow  # research path (not the product's): the slow lane (pytest -m slow), for the 12-minute default run
def test_denoises_its_class_and_discriminates(sine_and_square):
  """Each prior denoises its own class better than the input and better than the other class's prior."""
  rng = np.random.default_rng(7)
  for kind in ("sine", "square"):
    clean = toy(kind, 8, 1024, rng)
    for sigma in (0.1, 0.3):
      noisy = clean + sigma * rng.standard_normal(clean.shape).astype(np.float32)
      own = _snr(clean, sine_and_square[kind].denoise(noisy, sigma).numpy())
      other = _snr(clean, sine_and_square["square" if kind == "sine" else "sine"].denoise(noisy, sigma).numpy())
      assert own > _snr(clean, noisy) + 3.0 and own > other + 1.0, (kind, sigma, own, other, _snr(clean, noisy))


@pytest.mark.slow  # research path (not the product's): the slow lane (pytest -m slow), for the 12-minute default run
def test_samples_are_finite_and_reproducible(sine_and_square):
  prior = sine_and_square["sine"]
  a = prior.sample(2, 1024, seed=5, num_steps=12).numpy()
  b = prior.sample(2, 1024, seed=5, num_steps=12).numpy()
  assert a.shape == (2, 1024) and np.all(np.isfinite(a))
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, prior.sample(2, 1024, seed=6, num_steps=12).numpy())


@pytest.mark.slow  # research path (not the product's): the slow lane (pytest -m slow), for the 12-minute default run
def test_sampler_churn_zero_is_ddim_and_one_is_denoise_then_fresh_noise(sine_and_square):
  """sample_churn = 0: x <- D + (s'/s)(x - D) (the probability-flow ODE, Euler); 1: x <- D + s' z. Both
  re-derived step by step here from the denoiser and the same seeded noise."""
  prior = sine_and_square["sine"]
  steps, seed = 6, 11
  sigmas = np.geomspace(prior.sample_sigma_max, 0.01, steps).astype(np.float32)
  start = tf.random.stateless_normal([2, 512], tf.constant([seed, 0], tf.int32))
  saved = prior.sample_churn
  try:
    for churn in (0.0, 1.0):
      prior.sample_churn = churn
      object.__setattr__(prior, "_sample_fn", None)  # the compiled sampler reads the churn when traced
      got = prior.sample(2, 512, seed=seed, num_steps=steps).numpy()
      x = start * sigmas[0]
      for i in range(steps - 1):
        d = prior.denoise(x, sigmas[i])
        fresh = tf.random.stateless_normal([2, 512], tf.stack([tf.constant(seed), tf.constant(i + 1)]))
        x = d + (sigmas[i + 1] / sigmas[i]) * (x - d) if churn == 0 else d + sigmas[i + 1] * fresh
      np.testing.assert_allclose(got, prior.denoise(x, sigmas[-1]).numpy(), atol=1e-4)
  finally:
    prior.sample_churn = saved
    object.__setattr__(prior, "_sample_fn", None)
  with pytest.raises(ValueError, match="sample_churn"):
    ScorePrior(sample_churn=1.5)


# ------------------------------------------------------------------------------------------- use


def _coloured(kind, n, length, rng):
  """Gaussian noise, low-passed (moving average of 8) or high-passed (first difference): two classes that a
  Wiener filter separates, so that the test checks the Langevin machinery, not the priors' strength."""
  w = rng.standard_normal([n, length + 8])
  x = (np.stack([w[:, i:i + length] for i in range(8)]).mean(0) * 2.0 if kind == "low"
       else 0.5 * (w[:, 1:length + 1] - w[:, :length]))
  return x.astype(np.float32)


@pytest.mark.slow  # research path (not the product's): the slow lane (pytest -m slow), for the 12-minute default run
def test_langevin_with_score_priors_separates_spectrally_distinct_classes():
  priors = {kind: _train(_prior(seed), lambda b, r, k=kind: _coloured(k, b, 1024, r), 200, seed=seed)[0]
            for seed, kind in enumerate(("low", "high"))}
  rng = np.random.default_rng(11)
  s = np.stack([_coloured("low", 4, 1024, rng), _coloured("high", 4, 1024, rng)], axis=1)
  m = s.sum(1)
  sep = LangevinSeparator(priors, SR, "sum", num_levels=6, steps_per_level=15, jit_compile=False)
  est = sep.separate(m).numpy()
  np.testing.assert_allclose(est.sum(1), m, atol=1e-4)  # mixture consistency
  gain = np.median([_snr(s[i, k], est[i, k]) - _snr(s[i, k], m[i] / 2) for i in range(4) for k in range(2)])
  assert gain > 2.0, gain  # posterior samples, not the MMSE estimate: ~3 dB measured


@pytest.mark.slow  # research path (not the product's): the slow lane (pytest -m slow), for the 12-minute default run
def test_elbo_prior_term_has_the_score_as_gradient(sine_and_square):
  prior = sine_and_square["sine"]
  s = tf.random.normal([2, 512])
  sigma = tf.constant([0.2, 0.2])
  with tf.GradientTape() as tape:
    tape.watch(s)
    term = tf.reduce_sum(encoder_lib._prior_term(prior, s, sigma))  # pylint: disable=protected-access
  np.testing.assert_allclose(tape.gradient(term, s), prior.score(s, sigma), rtol=1e-5, atol=1e-5)
  # noised (score distillation): the pull of the denoiser at s + sigma e, e the next draw of the global seed.
  tf.random.set_seed(11)
  with tf.GradientTape() as tape:
    tape.watch(s)
    term = tf.reduce_sum(encoder_lib._prior_term(prior, s, sigma, noised=True))  # pylint: disable=protected-access
  tf.random.set_seed(11)
  e = tf.random.normal(tf.shape(s))
  pull = (prior.denoise(s + 0.2 * e, sigma) - s) / 0.04
  np.testing.assert_allclose(tape.gradient(term, s), pull, rtol=1e-4, atol=1e-3)
  assert not np.allclose(pull, prior.score(s, sigma), atol=1e-2)


@pytest.mark.slow  # research path (not the product's): the slow lane (pytest -m slow), for the 12-minute default run
def test_denoising_energy_is_the_diffusion_elbo_sum_and_ranks_classes(sine_and_square):
  """ScorePrior.denoising_energy re-derived on a 3-level grid; reproducible for a seed; lower for a prior's own
  class than for the other class, and lower for a clean sine than for the same sine with a square added."""
  sine, square = sine_and_square["sine"], sine_and_square["square"]
  rng = np.random.default_rng(5)
  x = toy("sine", 6, 1024, rng)
  grid = np.geomspace(0.02, 0.5, 3)
  got = sine.denoising_energy(x, grid, seed=4).numpy()
  want = np.zeros(6)
  for i, sigma in enumerate(grid.astype(np.float32)):
    e = tf.random.stateless_normal(x.shape[-1:], [4, i])[None]  # one draw, the same for every row
    want += np.sum((sine.denoise(x + sigma * e, sigma).numpy() - x) ** 2, axis=-1) / sigma ** 2
  np.testing.assert_allclose(got, 0.5 * np.log(0.5 / 0.02) / 2 * want, rtol=1e-4)
  np.testing.assert_array_equal(got, sine.denoising_energy(x, grid, seed=4).numpy())
  assert not np.allclose(got, sine.denoising_energy(x, grid, seed=5).numpy())
  grid = np.geomspace(0.01, 1.0, 8)
  sq = toy("square", 6, 1024, rng)
  assert np.all(sine.denoising_energy(x, grid, 1).numpy() < square.denoising_energy(x, grid, 1).numpy())
  assert np.all(square.denoising_energy(sq, grid, 1).numpy() < sine.denoising_energy(sq, grid, 1).numpy())
  assert np.all(sine.denoising_energy(x, grid, 1).numpy() < sine.denoising_energy(x + 0.3 * sq, grid, 1).numpy())


@pytest.mark.slow  # research path (not the product's): the slow lane (pytest -m slow), for the 12-minute default run
def test_confusion_table_ranks_score_priors_by_denoising(sine_and_square):
  from vsep_tf.evaluation import confusion  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(3)
  examples = {kind: toy(kind, 8, 1024, rng) for kind in ("sine", "square")}
  table = confusion.log_likelihood_table(sine_and_square, examples, [0.1, 0.3])
  assert table.shape == (2, 2, 2) and np.all(table < 0)
  assert all(info["col_hits"] == 2 for info in confusion.summarize(table, list(examples)))
  with pytest.raises(ValueError, match="sigma must be > 0"):
    confusion.log_likelihood_table(sine_and_square, examples, [0.0])
