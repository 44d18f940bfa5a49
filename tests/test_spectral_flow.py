"""Spectral flow priors (priors/spectral_flow.py): shapes and interface, invertibility, the flow's log-det
against a numerical Jacobian, a normalised density (2-D grid integral), the trainer (--job=spectral
--spectral_prior=flow) on a stem folder of real WAV files, load_separator on its model directory, held-out
frames classified by likelihood, and (slow, xfail: measured not to work yet) the separation of two tone classes.

Float32 throughout: round trips atol 2e-3 (strongly perturbed weights), log-dets atol 2e-3 against slogdet of the batch Jacobian."""
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import TONE_PITCHES, TONE_RATE, tone, two_tone_stem_folder
from vsep_tf import model_dir as model_dir_lib
from vsep_tf import registry, run_flags
from vsep_tf.evaluation import bsseval
from vsep_tf.model_dir import load_separator
from vsep_tf.priors.spectral import LOG_FLOOR, SpectralPrior
from vsep_tf.priors.spectral_flow import (ENCODE_LOGVAR, NYQUIST_FEATURE, SpectralFlowPrior,
                                          build_spectral_flow_prior)
from vsep_tf.separators import spectral

RATE, PITCHES = TONE_RATE, TONE_PITCHES
SMALL = ["--spectral_flow.n_fft=512", "--spectral_flow.hop=128", "--spectral_flow.squeeze=8",
         "--spectral_flow.num_blocks=2", "--spectral_flow.flows_per_block=2", "--spectral_flow.width=16",
         "--spectral_flow.num_layers=2"]


@pytest.fixture(autouse=True)
def _seed():
  keras.utils.set_random_seed(1234)


def _perturb(prior, scale=0.2, seed=0):
  """Random values added to every trainable weight (zero-initialised couplings become non-trivial)."""
  rng = np.random.default_rng(seed)
  for v in prior.trainable_variables:
    v.assign(v.numpy() + scale * rng.standard_normal(v.shape).astype(np.float32))


def _small(n_fft=64, **kwargs):
  args = dict(n_fft=n_fft, hop=n_fft // 4, squeeze=4, num_blocks=2, flows_per_block=2, width=8, num_layers=2)
  args.update(kwargs)
  return build_spectral_flow_prior(**args)


def test_shapes_interface_invertibility_and_config():
  prior = _small()
  assert (prior.bins, prior.latent_dim, prior.concentration) == (33, 32, 300.0)
  v = tf.random.uniform([2, 3, 33], 0.0, 1.0) ** 3
  prior.initialize(tf.reshape(v, [-1, 33]))
  _perturb(prior)
  mu, logvar = prior.encode(v)
  assert mu.shape == (2, 3, 32) and logvar.shape == (2, 3, 32)
  assert np.all(logvar.numpy() == ENCODE_LOGVAR)
  np.testing.assert_allclose(prior.encode(5.0 * v)[0], mu, atol=1e-3, rtol=1e-4)  # gain-invariant features
  # forward then inverse is the identity (fresh tensors: no bijector cache can answer)
  y = prior.features(tf.reshape(v, [-1, 33]))
  z, _ = prior.flow_forward(tf.constant(y.numpy()))
  y_back = prior.flow_inverse(tf.constant(z.numpy()))
  np.testing.assert_allclose(y_back, y, atol=2e-3)
  assert np.abs(z.numpy() - y.numpy()).max() > 0.1  # not the identity map
  # log_shape: a log-distribution over all bins; the frame's own latent gives back its (floor-blended) shape
  shape = prior.log_shape(mu)
  assert shape.shape == (2, 3, 33)
  np.testing.assert_allclose(tf.reduce_sum(tf.exp(shape), -1), 1.0, rtol=1e-5)
  feats = tf.concat([prior.features(v), tf.fill([2, 3, 1], NYQUIST_FEATURE)], -1)
  np.testing.assert_allclose(shape, tf.nn.log_softmax(feats, -1), atol=1e-3)
  u = (v / tf.reduce_sum(v, -1, keepdims=True)).numpy()
  # softmax(y) = (u * bins + floor) / sum: the shape blended with a tiny floor (Nyquist held at an empty bin)
  blended = (u[..., :32] * 33 + LOG_FLOOR) / (33 * (1 - u[..., 32:]) + 33 * LOG_FLOOR)
  np.testing.assert_allclose(np.exp(shape.numpy())[..., :32], blended, rtol=2e-3, atol=1e-5)
  assert prior.sample(4).shape == (4, 33)
  # losses: exact NLL per frame; evaluation is deterministic, training noises the features
  losses = prior.compute_losses(tf.reshape(v, [-1, 33]), training=False)
  assert set(losses) == {"total_loss", "log_det", "prior_nll"} and losses["total_loss"].shape == (6,)
  np.testing.assert_allclose(losses["total_loss"], prior.compute_losses(tf.reshape(v, [-1, 33]),
                                                                        training=False)["total_loss"])
  noisy = prior.compute_losses(tf.reshape(v, [-1, 33]), training=True)["total_loss"]
  assert np.all(np.isfinite(noisy.numpy())) and not np.allclose(noisy, losses["total_loss"])
  again = SpectralFlowPrior.from_config(prior.get_config())
  assert again.get_config() == prior.get_config()
  for bad in (dict(n_fft=60), dict(squeeze=1), dict(concentration=0.0), dict(noise_std=-1.0), dict(width=0)):
    with pytest.raises(ValueError):
      _small(**bad)


def _numerical_log_det(prior, y):
  y = tf.constant(np.asarray(y))
  with tf.GradientTape() as tape:
    tape.watch(y)
    z, _ = prior.flow_forward(tf.identity(y))
  jac = tape.batch_jacobian(z, y)  # [batch, F, F]
  sign, logabs = tf.linalg.slogdet(tf.cast(jac, tf.float64))
  assert np.all(sign.numpy() != 0), "singular Jacobian"
  return logabs.numpy()


def test_log_det_and_nll_match_a_numerical_jacobian():
  prior = _small(n_fft=32, squeeze=2, width=8)  # F = 16: [8, 2] then [4, 4]
  y_data = np.random.default_rng(0).standard_normal((5, 16)).astype(np.float32)
  prior.feature_norm.initialize(tf.constant(y_data)[..., None] * 0.5)
  _perturb(prior, scale=0.3)
  y = np.random.default_rng(1).standard_normal((5, 16)).astype(np.float32)
  z, log_det = prior.flow_forward(tf.constant(y))
  numerical = _numerical_log_det(prior, y)
  np.testing.assert_allclose(log_det.numpy(), numerical, atol=2e-3, rtol=1e-4)
  # the couplings' (input-dependent) part is large enough that leaving it out would fail the check above
  couplings = sum(b.forward_log_det_jacobian(x, event_ndims=2).numpy()
                  for b, x in _coupling_inputs(prior, y))
  assert np.abs(couplings).min() > 0.1 and np.ptp(couplings) > 0.1, couplings
  # NLL = 0.5 |z|^2 + F/2 log(2 pi) - log|det|, with the numerical log-det
  nll = prior.log_prob_features(tf.constant(y))[0].numpy() * -1
  expected = 0.5 * np.sum(z.numpy() ** 2, -1) + 8 * np.log(2 * np.pi) - numerical
  np.testing.assert_allclose(nll, expected, atol=3e-3, rtol=1e-5)


def _coupling_inputs(prior, y):
  """(coupling bijector, its input) along the forward pass."""
  x = tf.reshape(tf.constant(y), [-1, prior.latent_dim, 1])
  out = []
  for _, b in prior.steps():
    if "coupling" in b.name:
      out.append((b, x))
    x = b.forward(x)
  return out


def test_density_integrates_to_one_in_two_dimensions():
  prior = build_spectral_flow_prior(n_fft=4, hop=1, squeeze=2, num_blocks=1, flows_per_block=3, width=8,
                                    num_layers=2)  # F = 2: one position, two channels
  _perturb(prior, scale=0.3, seed=3)
  g = np.linspace(-9.0, 9.0, 361, dtype=np.float32)
  grid = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
  log_p = prior.log_prob_features(tf.constant(grid))[0].numpy()
  mass = np.exp(log_p).sum() * (g[1] - g[0]) ** 2
  assert abs(mass - 1.0) < 0.02, mass


_tone, _stem_folder = tone, two_tone_stem_folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A --job=spectral --spectral_prior=flow model directory from a two-class stem folder (one track held out)."""
  from vsep_tf.training import trainer as trainer_lib  # pylint: disable=import-outside-toplevel
  root = _stem_folder(tmp_path_factory.mktemp("stems"))
  model_dir = tmp_path_factory.mktemp("model") / "flow"
  cfg = run_flags.parse_flags([
      f"--model_dir={model_dir}", "--job=spectral", "--spectral_prior=flow", "--dataset=stems",
      f"--data_root={root}", "--valid_tracks=1", "--train_steps=300", "--batch_size=32", "--learning_rate=3e-3",
      "--grad_clip_norm=0", "--steps_per_loop=50", "--checkpoint_every=300", "--warmup_steps=20",
      "--spectral_search.iterations=100", "--spectral_search.prior_weight=0.3", *SMALL])
  trainer = trainer_lib.get_trainer("spectral")(cfg, None)
  first = trainer.train(num_steps=50)
  metrics = trainer.train()
  return root, model_dir, trainer, first, metrics


def test_trainer_writes_a_flow_model_dir_that_loads(trained):
  _, model_dir, trainer, first, metrics = trained
  assert int(trainer.step.numpy()) == 300 and set(metrics) == {"sine", "square", "total_loss"}
  assert metrics["sine"] < first["sine"] and metrics["square"] < first["square"], (first, metrics)
  assert all(isinstance(p, SpectralFlowPrior) for p in trainer.priors.values())
  assert all(float(p.initialized.numpy()) == 1.0 for p in trainer.priors.values())
  manifest = json.loads((model_dir / model_dir_lib.MANIFEST_FILENAME).read_text())
  settings = manifest["settings"]
  assert manifest["separator"] == "spectral" and settings["spectral_prior"] == "flow"
  assert settings["spectral_flow.squeeze"] == 8 and not [k for k in settings if k.startswith("spectral.")]
  priors = model_dir_lib.restore_spectral_priors(str(model_dir))
  assert tuple(priors) == ("sine", "square") and all(isinstance(p, SpectralFlowPrior) for p in priors.values())
  v = tf.random.uniform([4, 257])
  for name, p in priors.items():  # the restored weights are the trained ones
    np.testing.assert_allclose(p.compute_losses(v, training=False)["total_loss"],
                               trainer.priors[name].compute_losses(v, training=False)["total_loss"], rtol=1e-5)
  sep = load_separator(str(model_dir))
  assert isinstance(sep, spectral.SpectralPriorSeparator) and sep.n_fft == 512
  assert sep.settings["iterations"] == 100 and sep.concentration == 300.0
  # a VAE directory (no 'spectral_prior' in older manifests) still restores VAE priors
  assert registry.spectral_prior_family({}) == "spectral"
  assert isinstance(registry.build_spectral_priors({"spectral_prior": "vae"}, ["a"])["a"], SpectralPrior)


def _held_out_pairs():
  rng = np.random.default_rng(99)  # new notes, pairs and phases
  pairs = [rng.choice(PITCHES, size=2, replace=False) for _ in range(4)]
  return np.stack([np.stack([_tone("sine", f, 1.0, rng), _tone("square", g, 1.0, rng)]) for f, g in pairs])


def test_each_prior_gives_its_own_class_the_highest_likelihood(trained):
  _, model_dir, _, _, _ = trained
  sep = load_separator(str(model_dir))
  sources = _held_out_pairs()
  # held-out frames: each class's own prior gives them the higher likelihood
  frames = tf.abs(tf.signal.stft(tf.constant(sources), 512, 128, fft_length=512))  # [4, 2, F, 257]
  for k, name in enumerate(sep.source_names):
    x = tf.reshape(frames[:, k], [-1, 257])
    nll = np.stack([p.compute_losses(x, training=False)["total_loss"].numpy() for p in sep.priors.values()])
    assert np.mean(np.argmin(nll, 0) == k) > 0.9, (name, np.mean(np.argmin(nll, 0) == k))


@pytest.mark.slow
@pytest.mark.xfail(reason="measured: the MAP fit under flow priors does not separate the tones (median SI-SDRi "
                   "-5.2 dB from the priors' own encoders, +0.3 from z = 0, bimodal: 2 of 4 mixes +15..+25 dB, "
                   "2 of 4 -15..-39 dB); a flow's latent reaches EVERY shape, so the encoder start (each class = "
                   "the mixture's shape) already fits the data term exactly", strict=False)
def test_the_flow_priors_separate_two_tone_classes(trained):
  _, model_dir, _, _, _ = trained
  sep = load_separator(str(model_dir))
  sources = _held_out_pairs()
  mixes = sources.sum(axis=1)
  est = np.asarray(sep.separate(mixes))
  assert est.shape == sources.shape and np.isfinite(est).all()
  np.testing.assert_allclose(est.sum(axis=1), mixes, atol=2e-3)  # Wiener masks of the sum
  gains = np.stack([bsseval.si_sdr_scores(sources[i], est[i], mixes[i])["si_sdri"] for i in range(4)])
  assert np.median(gains) > 5.0, gains
