"""WaveNet prior: the Prior contract, teacher forcing, gradients, learning, discrimination, fast sampling."""
import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf

from vsep_tf.priors.base import Prior, sample_sigma
from vsep_tf.priors.wavenet import WaveNetPrior, build_wavenet_prior

SR = 14700
TINY = dict(num_blocks=1, num_layers=6, residual_channels=16, skip_channels=16, num_mixtures=4, cond_channels=16)


def _prior(seed=0, **kw):
  keras.utils.set_random_seed(seed)
  cfg = dict(TINY)
  cfg.update(kw)
  return build_wavenet_prior(**cfg)


def toy(kind, n, length, rng):
  """The thesis's toy sources: f = 440 * 2^((key - 49) / 12), key ~ U[0.1, 64.9], random phase, amp ~ U[0.8, 1]."""
  key = rng.uniform(0.1, 64.9, n)
  f = 440.0 * 2.0 ** ((key - 49.0) / 12.0)
  phase = rng.uniform(0, 2 * np.pi, n)
  amp = rng.uniform(0.8, 1.0, n)
  arg = 2 * np.pi * f[:, None] * np.arange(length)[None] / SR + phase[:, None]
  wave = np.sin(arg) if kind == "sine" else np.sign(np.sin(arg))
  return (amp[:, None] * wave).astype(np.float32)


def _train(prior, kind, steps, length, seed, batch=8, lr=3e-3):
  """Noised maximum likelihood (Prior.compute_losses), sigma from the trainer's sample_sigma."""
  opt = keras.optimizers.Adam(lr)
  opt.build(prior.trainable_variables)

  @tf.function
  def step(x, sigma):
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(prior.compute_losses(x, sigma)["total_loss"])
    grads, _ = tf.clip_by_global_norm(tape.gradient(loss, prior.trainable_variables), 1.0)
    opt.apply_gradients(zip(grads, prior.trainable_variables))
    return loss

  rng = np.random.default_rng(seed)
  tf.random.set_seed(seed)
  for _ in range(steps):
    step(tf.constant(toy(kind, batch, length, rng)), sample_sigma(batch, 0.01, 1.0, 0.2))
  return prior


# ------------------------------------------------------------------------------------------- contract


def test_factory_signature_is_flag_ready_and_defaults():
  params = inspect.signature(build_wavenet_prior).parameters
  for name, p in params.items():
    assert p.default is not p.empty and type(p.default) in (int, float, bool), name
  prior = build_wavenet_prior()
  assert isinstance(prior, Prior) and isinstance(prior, WaveNetPrior)
  assert prior.receptive_field == 2 * (2 ** 10 - 1) + 1 == 2047
  assert not prior.discretized and prior.log_scale_min == -7.0


def test_log_prob_shapes_and_sigma_broadcast():
  prior = _prior()
  x = tf.random.stateless_normal([3, 100], seed=[1, 2]) * 0.5
  lp = prior.log_prob(x, tf.constant([0.0, 0.1, 1.0]))
  assert lp.shape == (3,) and np.all(np.isfinite(lp.numpy()))
  np.testing.assert_allclose(prior.log_prob(x, 0.1).numpy(), prior.log_prob(x, tf.fill([3], 0.1)).numpy())
  np.testing.assert_allclose(prior((x, tf.fill([3], 0.1))).numpy(), prior.log_prob(x, 0.1).numpy())
  # log_prob is the sum of the per-step conditionals, and sigma conditions the density
  np.testing.assert_allclose(tf.reduce_sum(prior.log_prob_per_step(x, 0.1), 1).numpy(),
                             prior.log_prob(x, 0.1).numpy(), rtol=1e-6)
  assert np.abs(prior.log_prob(x, 0.0).numpy() - prior.log_prob(x, 1.0).numpy()).min() > 1e-3


def test_teacher_forcing_is_causal_with_stated_receptive_field():
  prior = _prior()
  rf = prior.receptive_field
  assert rf == 64
  time = rf + 40
  x = tf.random.stateless_normal([2, time], seed=[3, 4]) * 0.5
  sigma = tf.constant([0.0, 0.2])
  params = prior.mixture_params(x, sigma).numpy()
  t = time - 10

  def params_after(s, delta=0.7):
    return prior.mixture_params(tf.tensor_scatter_nd_add(x, [[0, s], [1, s]], [delta, delta]), sigma).numpy()

  p_t = params_after(t)
  np.testing.assert_array_equal(p_t[:, :t + 1], params[:, :t + 1])  # x_t does not inform its own prediction
  assert np.abs(p_t[:, t + 1] - params[:, t + 1]).max() > 1e-5        # ... but the next one
  np.testing.assert_array_equal(params_after(t - rf - 1)[:, t], params[:, t])  # x_{t-R-1}: outside
  assert np.abs(params_after(t - rf)[:, t] - params[:, t]).max() > 0.0          # x_{t-R}: inside
  # the very first prediction sees only the zero input
  np.testing.assert_array_equal(params_after(0)[:, 0], params[:, 0])


def test_all_trainable_variables_get_gradients():
  prior = _prior()
  x = tf.constant(toy("sine", 4, 256, np.random.default_rng(0)))
  with tf.GradientTape() as tape:
    loss = tf.reduce_mean(prior.compute_losses(x, tf.constant([0.0, 0.01, 0.1, 1.0]))["total_loss"])
  grads = tape.gradient(loss, prior.trainable_variables)
  assert len(grads) == len(prior.trainable_variables) > 0
  for v, g in zip(prior.trainable_variables, grads):
    assert g is not None, v.path
    g = g.numpy()
    assert np.all(np.isfinite(g)) and np.abs(g).max() > 0, v.path


@pytest.mark.parametrize("discretized", [False, True])
def test_score_wrt_input_is_finite_inside_tf_function(discretized):
  prior = _prior(discretized=discretized)

  @tf.function
  def score(x, sigma):
    with tf.GradientTape() as tape:
      tape.watch(x)
      lp = prior.log_prob(x, sigma)
    return tape.gradient(lp, x)

  x = tf.constant(toy("square", 3, 200, np.random.default_rng(1)))
  x = tf.concat([x[:2], 5.0 * x[2:]], axis=0)  # one example far beyond [-1, 1]
  g = score(x, tf.constant([0.0, 0.05, 1.0])).numpy()
  assert g.shape == (3, 200) and np.all(np.isfinite(g)) and np.abs(g).max() > 0
  # the base class's score() gives the same drift
  np.testing.assert_allclose(prior.score(x, tf.constant([0.0, 0.05, 1.0])).numpy(), g, rtol=1e-4, atol=1e-3)


def test_config_round_trip_keras_file_and_checkpoint(tmp_path):
  prior = _prior(discretized=True, log_scale_min=-8.0, gate_channels=12, head_channels=20)
  x = tf.constant(toy("sine", 2, 150, np.random.default_rng(2)))
  sigma = tf.constant([0.0, 0.3])
  want = prior.log_prob(x, sigma).numpy()
  prior.sample(2, 20, 0.1, jit_compile=False)  # the cached sampler must not end up in checkpoints or files

  clone = WaveNetPrior.from_config(prior.get_config())
  clone.set_weights(prior.get_weights())
  np.testing.assert_allclose(clone.log_prob(x, sigma).numpy(), want, rtol=1e-6)

  prior.save(tmp_path / "prior.keras")
  loaded = keras.models.load_model(tmp_path / "prior.keras")
  assert isinstance(loaded, WaveNetPrior) and loaded.get_config() == prior.get_config()
  np.testing.assert_allclose(loaded.log_prob(x, sigma).numpy(), want, rtol=1e-6)

  # tf.train.Checkpoint (the trainer's format) must hold every weight, the residual blocks included
  path = tf.train.Checkpoint(model=prior).write(str(tmp_path / "ckpt"))
  stored = sum(int(np.prod(shape)) for name, shape in tf.train.list_variables(path) if "VARIABLE_VALUE" in name)
  assert stored == prior.count_params()
  fresh = _prior(seed=1, discretized=True, log_scale_min=-8.0, gate_channels=12, head_channels=20)
  tf.train.Checkpoint(model=fresh).read(path).assert_consumed()
  np.testing.assert_allclose(fresh.log_prob(x, sigma).numpy(), want, rtol=1e-6)


# -------------------------------------------------------------------------------------------- learning


def test_few_adam_steps_lower_nll_on_noised_sines():
  prior = _prior()
  rng = np.random.default_rng(5)
  x = tf.constant(toy("sine", 8, 512, rng))
  sigma = tf.constant([0.0, 0.01, 0.03, 0.1, 0.1, 0.3, 0.5, 1.0])
  noisy = x + sigma[:, None] * tf.random.stateless_normal(x.shape, seed=[5, 6])
  before = float(tf.reduce_mean(prior.log_prob(noisy, sigma))) / 512
  _train(prior, "sine", steps=30, length=512, seed=6)
  after = float(tf.reduce_mean(prior.log_prob(noisy, sigma))) / 512
  assert after > before + 0.3, (before, after)


def _discrimination(steps, length, n_test, sigmas, seed=0, eval_length=2048, **model):
  """Trains a sine and a square prior on `length`-sample crops; scores held-out `eval_length`-sample examples of
  both classes under both priors at each sigma. Returns {(sigma, class): (own, other)} in nats per sample."""
  priors = {kind: _train(_prior(seed=seed, **model), kind, steps, length, seed=seed + i)
            for i, kind in enumerate(("sine", "square"))}
  rng = np.random.default_rng(1000 + seed)  # held out: other frequencies, phases and amplitudes
  length = eval_length
  test = {kind: toy(kind, n_test, length, rng) for kind in priors}
  results = {}
  for sigma in sigmas:
    for kind, x in test.items():
      noisy = x + sigma * rng.standard_normal(x.shape).astype(np.float32)
      lp = {pk: p.log_prob(noisy, tf.fill([n_test], sigma)).numpy() / length for pk, p in priors.items()}
      other = "square" if kind == "sine" else "sine"
      results[(sigma, kind)] = (lp[kind], lp[other])
  return results


@pytest.mark.slow  # research path (not the product's): the slow lane (pytest -m slow), for the 12-minute default run
def test_sine_and_square_priors_rank_their_own_class_higher():
  """Fast variant (~15 s): tiny priors (RF 64), 300 Adam steps on 512-sample crops. Each prior scores its own
  class's held-out examples higher on average (nats per sample) and for at least 2/3 of the examples, noiseless
  and at sigma = 0.1. (Over training seeds 0-3 the worst case seen was 12/16; such brief training is noisy.)"""
  results = _discrimination(steps=300, length=512, n_test=16, sigmas=(0.0, 0.1), eval_length=1024)
  for (sigma, kind), (own, other) in results.items():
    assert np.mean(own - other) > 0.3, (sigma, kind, np.mean(own - other))
    assert np.mean(own > other) >= 2 / 3, (sigma, kind, own, other)


@pytest.mark.slow
def test_sine_and_square_priors_rank_their_own_class_higher_longer_training():
  """~200 s: RF 511, 800 steps on 2048-sample crops, noise levels up to 0.3. A few low-fundamental squares (flat
  for hundreds of samples, with only ~4 edges per crop as evidence) are the hard cases; >= 85 % must rank right.
  400 steps were not enough (84 % of the squares at sigma 0.01); 800 steps: 94 % to 100 % at every level in the
  runs that set the bar, 87.5 % (28 of 32 squares at sigma 0.1) in a later CI run of the same seeds: multithreaded
  CPU training is not bit-reproducible, and 32 items resolve 3 %. Hence 85 %, not 90 %."""
  results = _discrimination(steps=800, length=2048, n_test=32, sigmas=(0.0, 0.01, 0.1, 0.3),
                            num_blocks=2, num_layers=8)
  for (sigma, kind), (own, other) in results.items():
    assert np.mean(own - other) > 0.1, (sigma, kind, np.mean(own - other))
    assert np.mean(own > other) >= 0.85, (sigma, kind, own, other)


# -------------------------------------------------------------------------------------------- sampling


@pytest.fixture(scope="module")
def trained_prior():
  return _train(_prior(seed=3), "sine", steps=5, length=256, seed=3)  # away from the initial weights


@pytest.mark.parametrize("jit_compile,discretized", [(True, False), (False, False), (True, True)])
def test_fast_sampling_matches_teacher_forced_distribution(trained_prior, jit_compile, discretized):
  prior = trained_prior
  if discretized:  # the same network read through the discretised mixture
    prior = WaveNetPrior.from_config({**trained_prior.get_config(), "discretized": True})
    prior.set_weights(trained_prior.get_weights())
  length = 2 * prior.receptive_field + 37              # every queue wraps around
  sigma = tf.constant([0.0, 0.05, 1.0])
  x, lp_inc = prior.sample(3, length, sigma, seed=7, return_log_prob=True, jit_compile=jit_compile)
  assert x.shape == (3, length) and np.all(np.isfinite(x.numpy()))
  lp_par = prior.log_prob_per_step(x, sigma).numpy()
  np.testing.assert_allclose(lp_inc.numpy(), lp_par, rtol=1e-4, atol=1e-4)   # every step's distribution
  np.testing.assert_allclose(lp_inc.numpy().sum(1), prior.log_prob(x, sigma).numpy(), rtol=1e-5, atol=1e-2)
  # seeded draws are reproducible, unseeded ones are not (one unseeded trace is enough: XLA compiles take ~2 s)
  np.testing.assert_array_equal(prior.sample(3, length, sigma, seed=7, jit_compile=jit_compile).numpy(), x.numpy())
  if not jit_compile:
    assert np.abs(prior.sample(3, length, sigma, jit_compile=False).numpy() - x.numpy()).max() > 0


def test_temperature_narrows_samples():
  prior = _prior(seed=4)
  hot = prior.sample(4, 200, 0.1, temperature=1.0, seed=1, jit_compile=False).numpy()
  cold = prior.sample(4, 200, 0.1, temperature=0.0, seed=1, jit_compile=False).numpy()
  assert np.all(np.isfinite(cold))
  # at temperature 0 every step is a component mean: the per-step log-density is higher on average
  lp = lambda x: prior.log_prob(x, tf.fill([4], 0.1)).numpy().mean()
  assert lp(cold) > lp(hot)
