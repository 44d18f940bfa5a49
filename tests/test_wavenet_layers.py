"""WaveNet layers and the logistic-mixture output distribution."""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import special

import vsep_tf.priors  # noqa: F401  registers every project class, so a clash of registered names shows below
from vsep_tf.layers import mixture as mix
from vsep_tf.layers.wavenet import DilatedConv1D, NoiseLevelEmbedding, ResidualBlock, WaveNet

RNG = np.random.default_rng(0)


def _wavenet(**kw):
  cfg = dict(num_blocks=2, num_layers=3, residual_channels=8, skip_channels=8, out_channels=3, kernel_size=2)
  cfg.update(kw)
  keras.utils.set_random_seed(cfg.pop("seed", 0))
  net = WaveNet(**cfg)
  cond_shape = (None, 5) if cfg.get("conditional") else None
  net.build((None, None, 2), cond_shape)
  return net


def _x(batch=2, time=64, channels=2, seed=0):
  return tf.constant(np.random.default_rng(seed).standard_normal((batch, time, channels)), tf.float32)


# ----------------------------------------------------------------------------------------------- layers


@pytest.mark.parametrize("kernel_size", [2, 3])
def test_causal_output_ignores_future(kernel_size):
  net = _wavenet(kernel_size=kernel_size)
  x = _x()
  t0 = 40
  x2 = tf.concat([x[:, :t0], x[:, t0:] + 1.0], axis=1)
  y, y2 = net(x).numpy(), net(x2).numpy()
  np.testing.assert_array_equal(y[:, :t0], y2[:, :t0])
  assert np.abs(y[:, t0] - y2[:, t0]).max() > 1e-4  # input t0 does reach output t0


@pytest.mark.parametrize("num_blocks,num_layers,kernel_size", [(1, 4, 2), (2, 3, 2), (2, 3, 3)])
def test_receptive_field_formula_and_boundary(num_blocks, num_layers, kernel_size):
  net = _wavenet(num_blocks=num_blocks, num_layers=num_layers, kernel_size=kernel_size)
  rf = net.receptive_field
  assert rf == (kernel_size - 1) * num_blocks * (2 ** num_layers - 1) + 1
  time = rf + 20
  t = time - 1
  x = _x(time=time)
  y = net(x).numpy()[:, t]

  def perturbed(s):
    return net(tf.tensor_scatter_nd_add(x, [[0, s, 0], [1, s, 1]], [3.0, 3.0])).numpy()[:, t]

  np.testing.assert_array_equal(y, perturbed(t - rf))          # just outside: no effect at all
  # oldest input inside the field matters (through one chain of taps only, hence a small effect)
  assert np.abs(y - perturbed(t - rf + 1)).max() > 1e-7
  # the same boundary seen by the gradient of output t: support exactly [t - rf + 1, t]
  with tf.GradientTape() as tape:
    tape.watch(x)
    out = tf.reduce_sum(net(x)[:, t] ** 2)
  support = np.flatnonzero(np.abs(tape.gradient(out, x).numpy()).sum(axis=(0, 2)))
  assert support.min() == t - rf + 1 and support.max() == t


def test_non_causal_is_centred():
  net = _wavenet(causal=False, num_blocks=1, num_layers=3, kernel_size=3)
  # taps at offsets -d..+d for every dilation 1, 2, 4: output t sees t-7 .. t+7
  x = _x(time=60)
  t = 30
  y = net(x).numpy()[:, t]
  for s, inside in [(t - 7, True), (t + 7, True), (t - 8, False), (t + 8, False)]:
    y2 = net(tf.tensor_scatter_nd_add(x, [[0, s, 0], [1, s, 0]], [3.0, 3.0])).numpy()[:, t]
    assert (np.abs(y - y2).min() > 1e-6) if inside else np.array_equal(y, y2), (s, inside)


def test_zero_init_output_gives_zero():
  net = _wavenet(causal=False, zero_init_output=True)
  np.testing.assert_array_equal(net(_x()).numpy(), 0.0)


def test_conditioning_changes_outputs_global_and_local():
  net = _wavenet(conditional=True)
  x = _x()
  c1 = tf.constant(RNG.standard_normal((2, 5)), tf.float32)
  y1, y2 = net(x, c1).numpy(), net(x, c1 + 1.0).numpy()
  assert np.abs(y1 - y2).mean() > 1e-3
  # a local (per-step) conditioning equal to the global one broadcast over time gives the same output
  y_local = net(x, tf.repeat(c1[:, None], x.shape[1], axis=1)).numpy()
  np.testing.assert_allclose(y1, y_local, atol=1e-5)
  with pytest.raises(ValueError):
    net(x)


def _roundtrip(layer, call):
  """from_config(get_config()) with copied weights gives the same outputs; also through keras (de)serialise."""
  out = call(layer)
  clone = layer.__class__.from_config(layer.get_config())
  call(clone)  # builds
  clone.set_weights(layer.get_weights())
  np.testing.assert_allclose(call(clone), out, atol=1e-6)
  clone2 = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
  assert type(clone2) is type(layer) and clone2.get_config() == layer.get_config()


def test_get_config_round_trips():
  x = _x()
  c = tf.constant(RNG.standard_normal((2, 5)), tf.float32)
  _roundtrip(DilatedConv1D(4, 3, 2, causal=False), lambda l: l(x).numpy())
  _roundtrip(ResidualBlock(2, 3, 2, 4, conditional=True), lambda l: np.concatenate(
      [o.numpy() for o in l(x, c)], axis=-1))
  _roundtrip(_wavenet(conditional=True, gate_channels=6, head_channels=5), lambda l: l(x, c).numpy())
  _roundtrip(NoiseLevelEmbedding(7), lambda l: l(tf.constant([0.0, 0.01, 1.0])).numpy())
  params = tf.constant(RNG.standard_normal((2, 64, 9)), tf.float32)
  _roundtrip(mix.LogisticMixture(3, -6.0, True), lambda l: l(params, x[..., 0]).numpy())


def test_residual_output_off_has_no_residual_weights():
  net = _wavenet()
  assert net.blocks[-1].res_proj is None and all(b.res_proj is not None for b in net.blocks[:-1])
  with tf.GradientTape() as tape:
    y = tf.reduce_sum(net(_x()) ** 2)
  grads = tape.gradient(y, net.trainable_variables)
  assert all(g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)


@pytest.mark.parametrize("kernel_size", [2, 3])
def test_incremental_step_matches_parallel(kernel_size):
  net = _wavenet(kernel_size=kernel_size, conditional=True)
  time = net.receptive_field + 15  # the queues wrap around
  x = _x(time=time)
  c = tf.constant(RNG.standard_normal((2, 5)), tf.float32)
  y = net(x, c).numpy()
  queues, cond_terms = net.init_queues(2), net.step_conditioning(c)
  steps = []
  for t in range(time):
    y_t, queues = net.step(x[:, t], queues, cond_terms)
    steps.append(y_t.numpy())
  np.testing.assert_allclose(np.stack(steps, axis=1), y, atol=1e-5)


def test_noise_level_embedding_sigma_zero_and_distinct():
  emb = NoiseLevelEmbedding(8)
  e = emb(tf.constant([0.0, 0.01, 0.1, 1.0])).numpy()
  assert e.shape == (4, 8) and np.all(np.isfinite(e))
  assert np.abs(e[0] - e[3]).max() > 1e-3


# ----------------------------------------------------------------------------------- mixture of logistics


def _np_reference(x, logits, means, log_scales, discretized, log_scale_min=-7.0, d=mix.BIN_WIDTH_16BIT):
  """float64, written from the definitions directly (no log-space tricks), for moderate z."""
  x, logits, means, raw = (np.asarray(a, np.float64) for a in (x, logits, means, log_scales))
  log_s = log_scale_min + np.log1p(np.exp(raw - log_scale_min))
  s = np.exp(log_s)
  pi = np.exp(logits - logits.max(-1, keepdims=True))
  pi /= pi.sum(-1, keepdims=True)
  z = (x[..., None] - means) / s
  if discretized:
    # upper-tail differences for z > 0 (same value, no cancellation of two numbers near 1)
    lo, hi = z - d / (2 * s), z + d / (2 * s)
    comp = np.where(z > 0, special.expit(-lo) - special.expit(-hi), special.expit(hi) - special.expit(lo)) / d
  else:
    e = np.exp(-np.abs(z))  # the logistic density is symmetric in z
    comp = e / (s * (1.0 + e) ** 2)
  return np.log(np.sum(pi * comp, axis=-1))


def _random_params(n, k, rng, log_scale_range=(-6.5, 0.0)):
  logits = rng.normal(0, 2, (n, k))
  means = rng.uniform(-1, 1, (n, k))
  raw = rng.uniform(*log_scale_range, (n, k))
  s = np.exp(-7.0 + np.log1p(np.exp(raw + 7.0)))
  comp = rng.integers(0, k, n)  # x near some component: |z| <= 12 for it, so the reference is accurate
  x = means[np.arange(n), comp] + rng.uniform(-12, 12, n) * s[np.arange(n), comp]
  return x, logits, means, raw


@pytest.mark.parametrize("discretized", [False, True])
def test_mixture_matches_float64_reference(discretized):
  rng = np.random.default_rng(1)
  x, logits, means, raw = _random_params(2000, 5, rng)
  ref = _np_reference(x, logits, means, raw, discretized)
  params = tf.constant(np.concatenate([logits, means, raw], -1), tf.float32)
  got = mix.LogisticMixture(5, -7.0, discretized)(params, tf.constant(x, tf.float32)).numpy()
  np.testing.assert_allclose(got, ref, rtol=1e-4, atol=2e-4)


def test_continuous_and_discretised_agree_at_default_floor():
  rng = np.random.default_rng(2)
  x, logits, means, raw = _random_params(1000, 4, rng, (-20.0, 0.0))  # many scales at the floor
  args = [tf.constant(a, tf.float32) for a in (logits, means)]
  log_s = mix.split_params(tf.constant(np.concatenate([logits, means, raw], -1), tf.float32), 4)[2]
  cont = mix.mixture_log_prob(tf.constant(x, tf.float32), *args, log_s).numpy()
  disc = mix.mixture_log_prob(tf.constant(x, tf.float32), *args, log_s, discretized=True).numpy()
  np.testing.assert_allclose(cont, disc, atol=2e-3)


def _grid_params():
  logits = tf.constant([[0.5, -1.0, 2.0]])
  means = tf.constant([[-0.5, 0.3, 0.9]])
  log_scales = tf.constant([[-6.0, -2.0, 0.5]])  # from 2.5e-3 to 1.6
  return logits, means, log_scales


def test_continuous_density_integrates_to_one():
  logits, means, log_scales = _grid_params()
  x = np.linspace(-60.0, 60.0, 1_200_001)  # spacing 1e-4 = s_min / 25
  lp = mix.mixture_log_prob(tf.constant(x[:, None], tf.float32), logits, means, log_scales).numpy()[:, 0]
  total = np.trapezoid(np.exp(lp.astype(np.float64)), x)
  assert abs(total - 1.0) < 1e-4, total


def test_discretised_masses_sum_to_one_off_grid_and_beyond_unit_range():
  logits, means, log_scales = _grid_params()
  d = 1e-3  # coarser bins than 16-bit keep the grid small; the maths is the same
  centres = 0.123e-3 + d * np.arange(-40_000, 40_001)  # [-40, 40], not aligned with 0
  lp = mix.mixture_log_prob(tf.constant(centres[:, None], tf.float32), logits, means, log_scales,
                            discretized=True, bin_width=d).numpy()[:, 0]
  total = np.sum(np.exp(lp.astype(np.float64)) * d)
  assert abs(total - 1.0) < 1e-4, total


@pytest.mark.parametrize("discretized", [False, True])
def test_stable_at_extremes(discretized):
  xs = tf.constant([-1e3, -10.0, -1.0, 0.0, 1e-7, 1.0, 10.0, 1e3])
  n = xs.shape[0]
  params = tf.Variable(tf.concat([tf.tile([[50.0, -50.0]], [n, 1]),   # extreme logits
                                  tf.zeros([n, 2]),                   # means 0
                                  tf.fill([n, 2], -100.0)], axis=-1))  # log-scales at the floor
  x = tf.Variable(xs)
  layer = mix.LogisticMixture(2, -7.0, discretized)
  with tf.GradientTape() as tape:
    lp = layer(params, x)
  gx, gp = tape.gradient(lp, [x, params])
  for a in (lp, gx, gp):
    assert np.all(np.isfinite(a.numpy())), a
  # bounded by the floor: p <= 1 / (4 s_min), |d log p / dx| <= 1 / s_min
  assert np.all(lp.numpy() <= 7.0 - math.log(4.0) + 1e-3)
  assert np.all(np.abs(gx.numpy()) <= math.exp(7.0) * 1.001)
  assert lp.numpy()[0] < -1e5  # far tail: about -|x| / s_min


def test_log_scale_floor_is_smooth():
  raw = tf.Variable([[0.0, -30.0]])
  with tf.GradientTape() as tape:
    log_s = mix.split_params(tf.concat([tf.zeros([1, 4]), raw], -1), 2, -7.0)[2]
  g = tape.gradient(log_s, raw).numpy()
  log_s = log_s.numpy()
  assert abs(log_s[0, 0] - 0.0) < 1e-3                      # identity well above the floor
  assert -7.0 <= log_s[0, 1] < -7.0 + 1e-6                  # at the floor far below it (never under)
  assert g[0, 1] > 0.0  # still a gradient below the floor (a hard max would give exactly 0)


def test_sampling_matches_moments():
  logits = tf.constant([[1.0, 0.0, -0.5]])
  means = tf.constant([[-0.6, 0.1, 0.8]])
  log_scales = tf.constant([[-3.0, -2.0, -1.5]])
  n = 200_000
  samples = mix.mixture_sample(tf.tile(logits, [n, 1]), tf.tile(means, [n, 1]), tf.tile(log_scales, [n, 1]),
                               seed=tf.constant([3, 4])).numpy().astype(np.float64)
  pi = tf.nn.softmax(logits).numpy()[0]
  mu, s = means.numpy()[0], np.exp(log_scales.numpy()[0])
  mean = np.sum(pi * mu)
  var = np.sum(pi * (s ** 2 * np.pi ** 2 / 3 + mu ** 2)) - mean ** 2
  assert abs(samples.mean() - mean) < 5 * math.sqrt(var / n)
  assert abs(samples.var() / var - 1.0) < 0.02
  # fraction below the middle component's mean: the mixture CDF there
  cdf = np.sum(pi / (1 + np.exp(-(0.1 - mu) / s)))
  assert abs(np.mean(samples < 0.1) - cdf) < 0.005
