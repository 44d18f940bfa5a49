"""Bijectors of the flow prior: round trips, inverse log-det = -forward log-det, analytic log-det against a
numerical Jacobian (GradientTape batch_jacobian of the flattened forward map + slogdet), initialisations.

Tolerances (float32 throughout): round trips atol 1e-5 (exact reshapes: 0); log-dets atol 1e-3 against slogdet.
Note: TFP caches x <-> y per bijector instance, so an inverse of a forward's own output returns the cached x. Every
check of a computation below uses a FRESH bijector or a fresh tensor (tf.constant(y.numpy())) to defeat the cache.
"""
import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from vsep_tf.bijectors import (ActNorm, ActNormLayer, AffineCoupling, CouplingWaveNet, InvertibleConv1x1,
                               InvertibleConv1x1Layer, SplitPriorNet, Squeeze, actnorm_init_values,
                               forward_and_log_det, inverse_and_log_det, lu_decompose, random_orthogonal_lu)
from vsep_tf.layers.wavenet import NoiseLevelEmbedding

tfb = tfp.bijectors


@pytest.fixture(autouse=True)
def _seed():
  """Keras initialisers draw from the global seed: fix it so every test sees the same weights."""
  keras.utils.set_random_seed(1234)


B, T, C = 2, 8, 4
ATOL_RT = 1e-5
ATOL_LDJ = 1e-3


def fresh(t):
  return tf.constant(np.asarray(t))


def numerical_log_det(forward, x):
  """log|det d forward(x) / dx| per example from the full Jacobian of the flattened map: [batch]."""
  x = fresh(x)
  with tf.GradientTape() as tape:
    tape.watch(x)
    y = forward(tf.identity(x))
    y = tf.reshape(y, [x.shape[0], -1])
  jac = tape.batch_jacobian(y, x)  # [batch, N, T, C]
  n = int(np.prod(x.shape[1:]))
  jac = tf.reshape(jac, [x.shape[0], n, n])
  sign, logabs = tf.linalg.slogdet(tf.cast(jac, tf.float64))
  assert np.all(sign.numpy() != 0), "singular Jacobian"
  return logabs.numpy()


def perturb(layer, scale=0.3, seed=0):
  """Random values for every trainable weight of a Keras layer (so zero-initialised outputs are non-trivial)."""
  rng = np.random.default_rng(seed)
  for v in layer.trainable_variables:
    v.assign(v.numpy() + scale * rng.standard_normal(v.shape).astype(np.float32))


def check_bijector(make, x, fwd_kwargs=None, exact=False):
  """Round trip, ildj == -fldj, fldj == numerical log-det, for a fresh bijector per computation."""
  kw = fwd_kwargs or {}
  x = tf.constant(x)
  y = make().forward(x, **kw)
  x_back = make().inverse(fresh(y), **kw)
  np.testing.assert_allclose(x_back.numpy(), x.numpy(), atol=0 if exact else ATOL_RT)
  fldj = make().forward_log_det_jacobian(x, event_ndims=2, **kw).numpy()
  ildj = make().inverse_log_det_jacobian(fresh(y), event_ndims=2, **kw).numpy()
  assert fldj.shape == (x.shape[0],)
  np.testing.assert_allclose(ildj, -fldj, atol=1e-5)
  num = numerical_log_det(lambda t: make().forward(t, **kw), x)
  np.testing.assert_allclose(fldj, num, atol=ATOL_LDJ, rtol=1e-4)
  return y, fldj


# ---------------------------------------------------------------------------------------------------------------
# Squeeze


def test_squeeze_layout_round_trip_and_log_det():
  x = np.random.default_rng(0).standard_normal((B, T, 3)).astype(np.float32)
  b = Squeeze(2)
  y = b.forward(x).numpy()
  assert y.shape == (B, T // 2, 6)
  for t in range(T // 2):
    np.testing.assert_array_equal(y[:, t, :3], x[:, 2 * t])
    np.testing.assert_array_equal(y[:, t, 3:], x[:, 2 * t + 1])
  _, fldj = check_bijector(lambda: Squeeze(2), x, exact=True)
  np.testing.assert_array_equal(fldj, 0.0)
  assert b.forward_event_shape([T, 3]) == [T // 2, 6]
  assert b.inverse_event_shape([T // 2, 6]) == [T, 3]
  np.testing.assert_array_equal(b.forward_event_shape_tensor([T, 3]).numpy(), [T // 2, 6])
  y4 = Squeeze(4).forward(x).numpy()
  assert y4.shape == (B, T // 4, 12)
  np.testing.assert_array_equal(y4[:, 1, 9:], x[:, 7])


def test_squeeze_rejects_odd_length():
  with pytest.raises(ValueError, match="divisible"):
    Squeeze(2).forward(tf.zeros([1, 7, 1]))


def test_squeeze_in_tf_function_with_unknown_time_keeps_static_channels():
  f = tf.function(lambda x: Squeeze(2).forward(x),
                  input_signature=[tf.TensorSpec([None, None, 3], tf.float32)])
  out_shape = f.get_concrete_function().output_shapes
  assert out_shape.as_list() == [None, None, 6]
  np.testing.assert_array_equal(f(tf.ones([2, 8, 3])).shape, [2, 4, 6])


# ---------------------------------------------------------------------------------------------------------------
# ActNorm


def test_actnorm_round_trip_and_log_det():
  rng = np.random.default_rng(1)
  loc = rng.standard_normal(C).astype(np.float32)
  log_scale = 0.5 * rng.standard_normal(C).astype(np.float32)
  x = rng.standard_normal((B, T, C)).astype(np.float32)
  _, fldj = check_bijector(lambda: ActNorm(loc, log_scale), x)
  np.testing.assert_allclose(fldj, T * log_scale.sum(), rtol=1e-5)


def test_actnorm_data_dependent_init_gives_zero_mean_unit_variance():
  rng = np.random.default_rng(2)
  x = (3.0 + 0.2 * rng.standard_normal((16, 64, C)) * np.arange(1, C + 1)).astype(np.float32)
  loc, log_scale = actnorm_init_values(x)
  y = ActNorm(loc, log_scale).forward(x).numpy()
  np.testing.assert_allclose(y.mean(axis=(0, 1)), 0.0, atol=1e-5)
  np.testing.assert_allclose(y.var(axis=(0, 1)), 1.0, atol=1e-4)
  layer = ActNormLayer(C)
  np.testing.assert_array_equal(layer.bijector().forward(x).numpy(), x)  # identity before init
  layer.initialize(x)
  y2 = layer.bijector().forward(x).numpy()
  np.testing.assert_allclose(y2.mean(axis=(0, 1)), 0.0, atol=1e-5)
  np.testing.assert_allclose(y2.var(axis=(0, 1)), 1.0, atol=1e-4)
  # A constant (silent) channel gets a bounded scale, not an infinite one.
  x[..., 0] = 0.5
  _, ls = actnorm_init_values(x, min_std=1e-3)
  assert np.isfinite(ls.numpy()).all() and ls.numpy()[0] == pytest.approx(-np.log(1e-3), rel=1e-5)


def test_actnorm_layer_gradients_reach_weights():
  layer = ActNormLayer(C)
  x = tf.random.normal([B, T, C])
  with tf.GradientTape() as tape:
    b = layer.bijector()
    loss = tf.reduce_sum(b.forward(x) ** 2) + tf.reduce_sum(b.forward_log_det_jacobian(x, event_ndims=2))
  grads = tape.gradient(loss, layer.trainable_variables)
  assert len(grads) == 2 and all(g is not None and np.abs(g.numpy()).sum() > 0 for g in grads)


# ---------------------------------------------------------------------------------------------------------------
# Invertible 1x1 convolution


def test_lu_decompose_reconstructs_with_pivoting():
  a = np.random.default_rng(3).standard_normal((5, 5))
  a[0, 0] = 0.0  # forces a pivot
  p, lower, upper = lu_decompose(a)
  np.testing.assert_allclose(p @ lower @ upper, a, atol=1e-12)
  np.testing.assert_allclose(np.diag(lower), 1.0)
  np.testing.assert_allclose(np.triu(lower, 1), 0.0)
  np.testing.assert_allclose(np.tril(upper, -1), 0.0)
  np.testing.assert_allclose(p @ p.T, np.eye(5))


def test_random_orthogonal_lu_is_orthogonal_and_logdet_matches():
  p, lower, upper, sign_s, log_s = random_orthogonal_lu(6, seed=4)
  w = p @ lower @ (upper + np.diag(sign_s * np.exp(log_s)))
  np.testing.assert_allclose(w @ w.T, np.eye(6), atol=1e-5)
  assert abs(log_s.sum()) < 1e-5  # |det| = 1
  b = InvertibleConv1x1(p, lower, upper, sign_s, log_s)
  np.testing.assert_allclose(b.weight().numpy(), w, atol=1e-6)


def test_invertible_conv_learned_lu_invertible_and_log_det():
  layer = InvertibleConv1x1Layer(C, seed=5)
  perturb(layer, scale=0.3, seed=5)
  b = layer.bijector()
  w = b.weight().numpy().astype(np.float64)
  sign, logabs = np.linalg.slogdet(w)
  assert sign != 0
  np.testing.assert_allclose(logabs, layer.log_s.numpy().sum(), atol=1e-5)
  np.testing.assert_allclose(b.inverse_weight().numpy() @ w, np.eye(C), atol=1e-5)
  # Structure: the stored upper-triangle entries never touch the diagonal or the lower part.
  assert len(layer.trainable_variables) == 3 and layer.lower_entries.shape == (C * (C - 1) // 2,)
  assert {v.path.split("/")[-1] for v in layer.non_trainable_variables} == {"permutation", "sign_s"}
  x = np.random.default_rng(6).standard_normal((B, T, C)).astype(np.float32)
  _, fldj = check_bijector(layer.bijector, x)
  np.testing.assert_allclose(fldj, T * layer.log_s.numpy().sum(), rtol=1e-5, atol=1e-5)


def test_invertible_conv_gradients_reach_every_trainable_weight():
  layer = InvertibleConv1x1Layer(C, seed=7)
  x = tf.random.normal([B, T, C])
  with tf.GradientTape() as tape:
    b = layer.bijector()
    loss = tf.reduce_sum(b.forward(x) ** 3) + tf.reduce_sum(b.forward_log_det_jacobian(x, event_ndims=2))
  grads = tape.gradient(loss, layer.trainable_variables)
  assert all(g is not None and np.abs(g.numpy()).sum() > 0 for g in grads)


# ---------------------------------------------------------------------------------------------------------------
# Affine coupling + coupling networks


def make_coupling_parts(seed=0, in_ch=C // 2, out_ch=C - C // 2):
  emb = NoiseLevelEmbedding(channels=5)
  net = CouplingWaveNet(in_ch, out_ch, width=8, num_layers=3, kernel_size=3, cond_dim=5)
  return emb, net


def test_coupling_starts_as_identity():
  emb, net = make_coupling_parts()
  e = emb(tf.constant([0.0, 0.3]))
  x = tf.random.normal([B, T, C])
  b = AffineCoupling(net)
  np.testing.assert_array_equal(b.forward(x, conditioning=e).numpy(), x.numpy())
  np.testing.assert_array_equal(b.forward_log_det_jacobian(x, event_ndims=2, conditioning=e).numpy(), 0.0)


def test_coupling_round_trip_log_det_and_conditioning():
  emb, net = make_coupling_parts()
  perturb(net, scale=0.3, seed=8)
  e = emb(tf.constant([0.0, 0.3]))
  x = np.random.default_rng(9).standard_normal((B, T, C)).astype(np.float32)
  y, fldj = check_bijector(lambda: AffineCoupling(net, log_scale_clamp=2.0), x, {"conditioning": e})
  assert np.abs(fldj).max() > 1e-2  # not the identity any more
  np.testing.assert_array_equal(y.numpy()[..., :C // 2], x[..., :C // 2])  # first half passes through
  # The conditioning matters: another sigma gives another output.
  e2 = emb(tf.constant([0.5, 0.0]))
  y2 = AffineCoupling(net).forward(tf.constant(x), conditioning=e2)
  assert np.abs(y2.numpy() - y.numpy()).max() > 1e-3
  # Without conditioning the network refuses (a mis-routed kwarg must not silently drop sigma).
  with pytest.raises(ValueError, match="conditioning"):
    AffineCoupling(net).forward(tf.constant(x))


def test_coupling_log_scale_is_soft_clamped():
  emb, net = make_coupling_parts()
  perturb(net, scale=5.0, seed=10)  # huge raw log-scales
  e = emb(tf.constant([0.1, 0.1]))
  x = tf.random.normal([B, T, C])
  fldj = AffineCoupling(net, log_scale_clamp=1.5).forward_log_det_jacobian(x, event_ndims=2, conditioning=e)
  assert np.all(np.abs(fldj.numpy()) <= 1.5 * T * (C - C // 2) + 1e-4)


def test_coupling_custom_split_and_split_prior_net():
  emb = NoiseLevelEmbedding(channels=3)
  net = SplitPriorNet(3, 1, kernel_size=3, cond_dim=3)
  e = emb(tf.constant([0.0, 1.0]))
  x = np.random.default_rng(11).standard_normal((B, T, C)).astype(np.float32)
  np.testing.assert_array_equal(AffineCoupling(net, num_masked=3).forward(x, conditioning=e).numpy(), x)
  perturb(net, 0.3, seed=12)
  check_bijector(lambda: AffineCoupling(net, num_masked=3), x, {"conditioning": e})


def test_coupling_network_runs_once_per_forward_and_log_det():
  emb, net = make_coupling_parts()
  perturb(net, 0.3, seed=13)
  calls = []

  def counted(x_a, conditioning):
    calls.append(1)
    return net(x_a, conditioning)

  e = emb(tf.constant([0.0, 0.3]))
  x = tf.random.normal([B, T, C])
  b = AffineCoupling(counted)
  y = b.forward(x, conditioning=e)
  b.forward_log_det_jacobian(x, event_ndims=2, conditioning=e)
  assert len(calls) == 1
  b2 = AffineCoupling(counted)
  x_back = b2.inverse(y, conditioning=e)  # another instance: no cache shared with b
  b2.inverse_log_det_jacobian(y, event_ndims=2, conditioning=e)
  assert len(calls) == 2
  np.testing.assert_allclose(x_back.numpy(), x.numpy(), atol=ATOL_RT)
  # No stale cache across instances: after a weight update a new coupling on the SAME tensor recomputes.
  net.wavenet.head_2.kernel.assign(net.wavenet.head_2.kernel + 0.1)
  y3 = AffineCoupling(counted).forward(x, conditioning=e)
  assert len(calls) == 3 and np.abs(y3.numpy() - y.numpy()).max() > 1e-3


def test_wavenet_is_non_causal_and_conditioned_in_every_layer():
  net = CouplingWaveNet(2, 2, width=8, num_layers=3, kernel_size=3, cond_dim=4)
  perturb(net, 0.3, seed=14)
  assert net.dilations == [1, 2, 4] and net.receptive_field == 1 + 2 * (1 + 7)
  x = tf.random.normal([1, 32, 2])
  e = tf.random.normal([1, 4])
  with tf.GradientTape() as tape:
    tape.watch(x)
    shift, _ = net(x, e)
    out = shift[0, 16, 0]
  g = np.abs(tape.gradient(out, x).numpy()[0]).sum(axis=-1)
  assert g[17:].sum() > 0 and g[:16].sum() > 0  # sees the future and the past
  assert g[16 + net.receptive_field // 2 + 1:].sum() == 0  # and nothing beyond its receptive field
  assert len(net.cond_proj) == net.num_layers
  with tf.GradientTape() as tape:
    shift, log_scale = net(x, e)
    loss = tf.reduce_sum(shift ** 2) + tf.reduce_sum(log_scale ** 2)
  grads = tape.gradient(loss, net.trainable_variables)
  assert all(g is not None and np.abs(g.numpy()).sum() > 0 for g in grads)


def test_glow_step_chain_with_conditional_kwargs():
  """Squeeze -> ActNorm -> 1x1 conv -> coupling as one tfb.Chain; the conditioning reaches the coupling by name."""
  emb, net = make_coupling_parts(in_ch=2, out_ch=2)
  act, conv = ActNormLayer(C), InvertibleConv1x1Layer(C, seed=15)
  for layer, seed in ((net, 16), (act, 17), (conv, 18)):
    perturb(layer, 0.2, seed)
  e = emb(tf.constant([0.0, 0.2]))

  def make():
    return tfb.Chain([AffineCoupling(net, name="cpl"), conv.bijector(), act.bijector(), Squeeze(2)])

  x = np.random.default_rng(19).standard_normal((B, 2 * T, 2)).astype(np.float32)
  kw = {"cpl": {"conditioning": e}}
  y = make().forward(x, **kw)
  assert y.shape == (B, T, C)
  np.testing.assert_allclose(make().inverse(fresh(y), **kw).numpy(), x, atol=ATOL_RT)
  fldj = make().forward_log_det_jacobian(x, event_ndims=2, **kw).numpy()
  num = numerical_log_det(lambda t: make().forward(t, **kw), x)
  np.testing.assert_allclose(fldj, num, atol=ATOL_LDJ, rtol=1e-4)
  # The one-pass walkers agree with the Chain.
  y1, ld1 = forward_and_log_det(make(), tf.constant(x), **kw)
  np.testing.assert_allclose(y1.numpy(), y.numpy(), atol=1e-6)
  np.testing.assert_allclose(ld1.numpy(), fldj, atol=1e-5)
  x1, ild1 = inverse_and_log_det(make(), fresh(y), **kw)
  np.testing.assert_allclose(x1.numpy(), x, atol=ATOL_RT)
  np.testing.assert_allclose(ild1.numpy(), -fldj, atol=1e-4)


def test_layers_get_config_round_trip():
  for layer in (ActNormLayer(3, min_std=1e-2, name="a"), InvertibleConv1x1Layer(3, seed=2, name="c"),
                NoiseLevelEmbedding(7, sigma_floor=1e-3, name="e"),
                CouplingWaveNet(2, 3, width=4, num_layers=2, kernel_size=5, dilation_cycle=1, cond_dim=6, name="w"),
                SplitPriorNet(2, 2, kernel_size=3, cond_dim=4, name="s")):
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    assert [v.shape for v in clone.weights] == [v.shape for v in layer.weights]
  # The 1x1 conv's random orthogonal init is reproducible from its config (seed).
  a, b = InvertibleConv1x1Layer(4, seed=3), InvertibleConv1x1Layer(4, seed=3)
  np.testing.assert_array_equal(a.bijector().weight().numpy(), b.bijector().weight().numpy())
