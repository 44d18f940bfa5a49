"""FlowPrior: exact round trip, log_prob against a brute-force change of variables, every weight a Keras weight with
a gradient, sampling, tf.function and grad_x, data-dependent init, config round trip, and learning (the NLL falls;
a prior trained on sines prefers held-out sines to square waves)."""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from vsep_tf.priors.base import sample_sigma
from vsep_tf.priors.flow import FlowPrior, build_flow_prior


@pytest.fixture(autouse=True)
def _seed():
  """Keras initialisers draw from the global seed: fix it so every test sees the same weights."""
  keras.utils.set_random_seed(1234)


TINY = dict(num_blocks=2, flows_per_block=2, width=8, num_layers=2, split_every=1, squeeze_first=1, embed_dim=4)
SR = 14700.0


def tiny_prior(**overrides):
  return build_flow_prior(**{**TINY, **overrides})


def perturb(model, scale=0.05, seed=0):
  """Random values for every trainable weight, so that no coupling or split prior is the identity."""
  rng = np.random.default_rng(seed)
  for v in model.trainable_variables:
    v.assign(v.numpy() + scale * rng.standard_normal(v.shape).astype(np.float32))
  return model


def toy_waves(kind, num, length, seed):
  """The thesis' toy sources: f = 440 * 2^((key - 49) / 12), key ~ U[0.1, 64.9] (capped at key 40 here so a tiny
  model sees several samples per period), phase uniform, amplitude ~ U[0.8, 1]. float32 [num, length]."""
  rng = np.random.default_rng(seed)
  key = rng.uniform(0.1, 40.0, (num, 1))
  f = 440.0 * 2.0 ** ((key - 49.0) / 12.0)
  phase = rng.uniform(0.0, 1.0, (num, 1))
  amp = rng.uniform(0.8, 1.0, (num, 1))
  cycles = f * np.arange(length)[None, :] / SR + phase
  if kind == "sine":
    w = np.sin(2 * np.pi * cycles)
  elif kind == "square":
    w = np.where((cycles % 1.0) < 0.5, 1.0, -1.0)
  else:
    raise ValueError(kind)
  return (amp * w).astype(np.float32)


@pytest.fixture(scope="module")
def default_prior():
  return build_flow_prior()


def test_structure_and_latent_layout(default_prior):
  m = tiny_prior()
  # pre-squeeze 2 -> [T/2, 2]; block 0: [T/4, 4], split 2 | 2; block 1: [T/8, 4]
  assert [p["channels"] for p in m._plan] == [4, 4] and m.time_multiple == 8
  assert m.latent_layout(32) == [(8, 2), (4, 4)]
  assert sum(t * c for t, c in m.latent_layout(32)) == 32
  d = default_prior
  assert d.time_multiple == 64 and sum(t * c for t, c in d.latent_layout(16384)) == 16384


@pytest.mark.parametrize("overrides", [{}, dict(squeeze_first=0, learned_split_prior=False, split_every=2,
                                               num_blocks=3)])
def test_round_trip_x_to_z_to_x(overrides):
  m = perturb(tiny_prior(**overrides), seed=1)
  x = tf.constant(np.random.default_rng(2).standard_normal((3, 64)).astype(np.float32) * 0.5)
  sigma = tf.constant([0.0, 0.05, 0.5])
  eps, log_det = m.encode(x, sigma)
  assert eps.shape == (3, 64) and log_det.shape == (3,)
  x_back = m.decode(tf.constant(eps.numpy()), sigma)
  np.testing.assert_allclose(x_back.numpy(), x.numpy(), atol=1e-4)


def test_log_prob_equals_brute_force_change_of_variables():
  """log p(x) = sum log N(eps; 0, 1) + log|det d eps / dx|, with the Jacobian of the WHOLE flow taken numerically."""
  m = perturb(tiny_prior(), scale=0.1, seed=3)
  t = 32
  x = tf.constant(np.random.default_rng(4).standard_normal((2, t)).astype(np.float32) * 0.5)
  sigma = tf.constant([0.0, 0.2])
  with tf.GradientTape() as tape:
    tape.watch(x)
    eps, _ = m.encode(x, sigma)
  jac = tape.batch_jacobian(eps, x)  # [2, T, T]
  _, logabsdet = np.linalg.slogdet(jac.numpy().astype(np.float64))
  eps = eps.numpy().astype(np.float64)
  brute = -0.5 * (eps ** 2).sum(axis=1) - 0.5 * t * math.log(2 * math.pi) + logabsdet
  lp = m.log_prob(x, sigma).numpy()
  assert np.abs(logabsdet).min() > 0.1  # the log-det is a real part of the answer here
  np.testing.assert_allclose(lp, brute, atol=2e-3, rtol=1e-5)
  _, log_det = m.encode(x, sigma)
  np.testing.assert_allclose(log_det.numpy(), logabsdet, atol=2e-3, rtol=1e-5)


def test_every_parameter_is_a_keras_weight_and_gets_a_gradient():
  m = tiny_prior()
  x = tf.random.normal([2, 32]) * 0.5
  sigma = tf.constant([0.0, 0.1])
  # Owned: exactly the variables log_prob reads are the model's trainable variables.
  with tf.GradientTape() as tape:
    lp = tf.reduce_sum(m.log_prob(x, sigma))
  watched = {v.ref() for v in tape.watched_variables()}
  owned = {v.value.ref() for v in m.trainable_variables}
  assert watched == owned
  assert len(m.trainable_variables) == len({v.path for v in m.trainable_variables})
  grads = tape.gradient(lp, m.trainable_variables)
  assert all(g is not None for g in grads)  # at init (zero-initialised outputs block some: zeros, not None)
  perturb(m, seed=5)
  with tf.GradientTape() as tape:
    lp = tf.reduce_sum(m.log_prob(x, sigma))
  grads = tape.gradient(lp, m.trainable_variables)
  dead = [v.path for v, g in zip(m.trainable_variables, grads) if g is None or not np.any(g.numpy())]
  assert not dead
  assert {v.path.split("/")[-1] for v in m.non_trainable_variables} == {"permutation", "sign_s",
                                                                         "actnorm_initialized"}


def test_sigma_conditioning_changes_the_density():
  m = perturb(tiny_prior(), seed=6)
  x = tf.random.normal([1, 32]) * 0.5
  lp = [float(m.log_prob(x, tf.constant([s]))[0]) for s in (0.0, 0.1, 1.0)]
  assert abs(lp[0] - lp[1]) > 1e-3 and abs(lp[1] - lp[2]) > 1e-3
  np.testing.assert_allclose(m.log_prob(x, 0.1).numpy(), lp[1], rtol=1e-6)  # scalar sigma broadcasts


def test_sample_shapes_and_temperature():
  m = perturb(tiny_prior(), seed=7)
  s = m.sample(3, 64, 0.1, seed=1)
  assert s.shape == (3, 64) and np.isfinite(s.numpy()).all()
  s = m.sample(2, 32, tf.constant([0.0, 0.3]), temperature=0.5)
  assert s.shape == (2, 32)
  mode0 = m.sample(2, 32, 0.1, temperature=0.0).numpy()
  np.testing.assert_allclose(mode0, m.decode(tf.zeros([2, 32]), 0.1).numpy(), atol=1e-6)
  eps, _ = m.encode(tf.constant(mode0), 0.1)
  np.testing.assert_allclose(eps.numpy(), 0.0, atol=1e-4)
  with pytest.raises(ValueError, match="divisible"):
    m.sample(1, 36, 0.1)


def test_length_must_be_divisible():
  m = tiny_prior()
  with pytest.raises(ValueError, match=r"divisible by 2\^\(squeeze_first \+ num_blocks\) = 8"):
    m.log_prob(tf.zeros([1, 36]), 0.0)
  f = tf.function(m.log_prob, input_signature=[tf.TensorSpec([None, None]), tf.TensorSpec([None])])
  with pytest.raises(tf.errors.InvalidArgumentError, match="divisible"):
    f(tf.zeros([1, 36]), tf.zeros([1]))


def test_log_prob_in_tf_function_and_gradient_wrt_input():
  m = perturb(tiny_prior(), seed=8)
  x = tf.constant(np.random.default_rng(9).standard_normal((2, 32)).astype(np.float32) * 0.5)
  sigma = tf.constant([0.01, 0.3])
  eager = m.log_prob(x, sigma).numpy()
  f = tf.function(m.log_prob, input_signature=[tf.TensorSpec([None, None]), tf.TensorSpec([None])])
  np.testing.assert_allclose(f(x, sigma).numpy(), eager, rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(f(tf.concat([x, x], 1), sigma).numpy().shape, [2])  # another length, same graph
  decode = tf.function(m.decode, input_signature=[tf.TensorSpec([None, None]), tf.TensorSpec([None])])
  eps, _ = m.encode(x, sigma)
  np.testing.assert_allclose(decode(eps, sigma).numpy(), x.numpy(), atol=1e-4)

  score = m.score(x, sigma)  # grad_x log p_sigma(x), the Langevin drift
  assert score.shape == (2, 32) and np.isfinite(score.numpy()).all()
  score_fn = tf.function(m.score)
  np.testing.assert_allclose(score_fn(x, sigma).numpy(), score.numpy(), rtol=1e-4, atol=1e-3)
  # Central differences along a random direction.
  v = tf.constant(np.random.default_rng(10).standard_normal((2, 32)).astype(np.float32))
  h = 1e-2
  fd = (m.log_prob(x + h * v, sigma) - m.log_prob(x - h * v, sigma)).numpy() / (2 * h)
  np.testing.assert_allclose((score * v).numpy().sum(axis=1), fd, rtol=2e-2, atol=5e-2)


def test_data_dependent_initialisation():
  m = tiny_prior()
  x = tf.constant(3.0 + 0.1 * np.random.default_rng(11).standard_normal((8, 64)).astype(np.float32))
  sigma = tf.fill([8], 0.05)
  assert not m.is_initialized
  assert m.initialize(x, sigma) is True and m.is_initialized
  # The first ActNorm sees the squeezed input ([8, 16, 4]) and now outputs zero mean, unit variance per channel.
  h = tf.reshape(x, [8, 16, 4])
  y = m.actnorms[0].bijector().forward(h).numpy()
  np.testing.assert_allclose(y.mean(axis=(0, 1)), 0.0, atol=1e-4)
  np.testing.assert_allclose(y.var(axis=(0, 1)), 1.0, atol=1e-3)
  loc = m.actnorms[0].loc.numpy().copy()
  assert m.initialize(x * 2.0, sigma) is False  # e.g. after a checkpoint restore: no re-init
  np.testing.assert_array_equal(m.actnorms[0].loc.numpy(), loc)
  assert m.initialize(x * 2.0, sigma, force=True) is True
  assert not np.allclose(m.actnorms[0].loc.numpy(), loc)
  assert np.isfinite(m.log_prob(x, sigma).numpy()).all()


def test_config_round_trip_and_keras_call():
  m = perturb(tiny_prior(log_scale_clamp=3.0, seed=4), seed=12)
  config = m.get_config()
  assert config["log_scale_clamp"] == 3.0 and config["num_blocks"] == 2 and config["seed"] == 4
  clone = FlowPrior.from_config(config)
  assert clone.get_config() == config
  clone.set_weights(m.get_weights())
  x = tf.random.normal([2, 32])
  sigma = tf.constant([0.0, 0.1])
  np.testing.assert_allclose(clone.log_prob(x, sigma).numpy(), m.log_prob(x, sigma).numpy(), rtol=1e-6)
  np.testing.assert_allclose(m((x, sigma)).numpy(), m.log_prob(x, sigma).numpy(), rtol=1e-6)
  # Same seed -> same initial 1x1 convolutions.
  np.testing.assert_array_equal(tiny_prior(seed=4).convs[1].permutation.numpy(), FlowPrior.from_config(
      config).convs[1].permutation.numpy())


def test_checkpoint_and_keras_file_restore_every_weight(tmp_path):
  """tf.train.Checkpoint (the trainer's route) must see every weight: Keras 3 list attributes are invisible to it."""
  m = perturb(tiny_prior(), seed=13)
  m.initialize(tf.random.normal([4, 32]), tf.zeros([4]))
  x = tf.random.normal([2, 32])
  sigma = tf.constant([0.0, 0.1])
  ref = m.log_prob(x, sigma).numpy()
  path = tf.train.Checkpoint(model=m).save(str(tmp_path / "ckpt"))
  saved = [name for name, _ in tf.train.list_variables(path) if name.startswith("model/")]
  assert len(saved) == len(m.weights)
  fresh = tiny_prior()
  tf.train.Checkpoint(model=fresh).restore(path).assert_consumed()
  np.testing.assert_allclose(fresh.log_prob(x, sigma).numpy(), ref, rtol=1e-6)
  assert fresh.is_initialized and fresh.initialize(x, sigma) is False  # a restored prior is not re-initialised
  m.save(str(tmp_path / "prior.keras"))
  loaded = keras.models.load_model(str(tmp_path / "prior.keras"))
  assert isinstance(loaded, FlowPrior)
  np.testing.assert_allclose(loaded.log_prob(x, sigma).numpy(), ref, rtol=1e-6)


def test_mirrored_strategy_initialize_and_step():
  """The trainer's route: weights and init under MirroredStrategy (2 logical CPUs, see conftest), one step."""
  strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
  x = tf.constant(toy_waves("sine", 4, 32, seed=20))
  sigma = tf.constant([0.0, 0.05, 0.1, 0.2])
  with strategy.scope():
    m = tiny_prior(num_blocks=1, flows_per_block=1, num_layers=1)  # small graph: replicated steps compile slowly
    opt = tf.keras.optimizers.Adam(1e-3)
    opt.build(m.trainable_variables)
    assert m.initialize(x, sigma)
  expected = -float(tf.reduce_mean(m.log_prob(x, sigma)))

  @tf.function
  def step(xs, ss):
    def replica_step(xs, ss):
      with tf.GradientTape() as tape:
        loss = tf.nn.compute_average_loss(-m.log_prob(xs, ss), global_batch_size=4)
      grads = tape.gradient(loss, m.trainable_variables)
      opt.apply_gradients(zip(grads, m.trainable_variables))
      return loss
    return strategy.reduce("SUM", strategy.run(replica_step, args=(xs, ss)), axis=None)

  batch = next(iter(strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors((x, sigma)))))
  loss = float(step(*batch))
  assert loss == pytest.approx(expected, rel=1e-4)
  assert -float(tf.reduce_mean(m.log_prob(x, sigma))) < expected  # the step helped


def _train(m, make_batch, steps, lr, seed=0):
  opt = tf.keras.optimizers.Adam(lr)
  opt.build(m.trainable_variables)

  @tf.function
  def step(clean, sigma):
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(m.compute_losses(clean, sigma)["total_loss"])
    grads = tape.gradient(loss, m.trainable_variables)
    opt.apply_gradients(zip(grads, m.trainable_variables))
    return loss

  for i in range(steps):
    clean, sigma = make_batch(i)
    step(tf.constant(clean), sigma)


@pytest.mark.slow  # research path (not the product's): the slow lane (pytest -m slow), for the 12-minute default run
def test_a_few_adam_steps_lower_the_nll():
  tf.random.set_seed(0)
  m = tiny_prior()
  train = toy_waves("sine", 64, 64, seed=0)
  evals = tf.constant(toy_waves("sine", 32, 64, seed=1))
  sigma_eval = tf.fill([32], 0.05)
  noisy_eval = evals + 0.05 * tf.random.stateless_normal([32, 64], seed=[1, 2])
  m.initialize(train[:32], tf.fill([32], 0.05))
  nll0 = -float(tf.reduce_mean(m.log_prob(noisy_eval, sigma_eval))) / 64
  _train(m, lambda i: (train[(i % 4) * 16:(i % 4 + 1) * 16], tf.fill([16], 0.05)), steps=25, lr=3e-3)
  nll1 = -float(tf.reduce_mean(m.log_prob(noisy_eval, sigma_eval))) / 64
  assert nll1 < nll0 - 0.1, (nll0, nll1)


@pytest.mark.slow  # research path (not the product's): the slow lane (pytest -m slow), for the 12-minute default run
def test_prior_trained_on_sines_prefers_sines_to_squares():
  """Discrimination (the thesis' toy result, own class >> other): a tiny prior trained 60 Adam steps on noised sines
  gives held-out sines a higher log-density than square waves of the same frequencies and amplitudes."""
  tf.random.set_seed(1)
  length = 256
  m = build_flow_prior(num_blocks=2, flows_per_block=2, width=16, num_layers=3, split_every=2, squeeze_first=2,
                       embed_dim=8)
  train = toy_waves("sine", 512, length, seed=2)
  m.initialize(train[:64], tf.fill([64], 0.05))

  def batch(i):
    idx = np.random.default_rng(i).integers(0, len(train), 32)
    return train[idx], sample_sigma(32, 0.01, 0.2, 0.0, seed=i)

  _train(m, batch, steps=60, lr=2e-3)
  sines = toy_waves("sine", 32, length, seed=100)
  squares = toy_waves("square", 32, length, seed=100)  # same frequencies, phases, amplitudes
  for s in (0.02, 0.1):
    sigma = tf.fill([32], s)
    noise = s * tf.random.stateless_normal([32, length], seed=[3, 4])
    lp_sine = m.log_prob(sines + noise, sigma).numpy() / length
    lp_square = m.log_prob(squares + noise, sigma).numpy() / length
    assert np.median(lp_sine) > np.median(lp_square) + 1.0, (s, np.median(lp_sine), np.median(lp_square))
    assert np.mean(lp_sine > lp_square) > 0.8


def test_default_config_builds_and_runs(default_prior):
  m = default_prior
  assert m.count_params() > 0
  n_trainable = sum(int(np.prod(v.shape)) for v in m.trainable_variables)
  assert 0.5e6 < n_trainable < 2e6  # CPU-sized
  lp = m.log_prob(tf.random.normal([1, 1024]) * 0.3, tf.constant([0.1]))
  assert lp.shape == (1,) and np.isfinite(lp.numpy()).all()
