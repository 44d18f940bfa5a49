"""Spectral VAE priors and MAP separation under them: the prior's losses and augmentation, the trainer on a
stem folder written here (real WAV files, a held-out 'valid' track), separation of two tone classes, the MAP
fit, load_separator / evaluate on the valid split, bad input."""
import json

import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from tests.conftest import TONE_PITCHES, TONE_RATE, tone, two_tone_stem_folder
from vsep_tf import model_dir as model_dir_lib
from vsep_tf import run_flags
from vsep_tf import signal as signal_lib
from vsep_tf.evaluation import bsseval
from vsep_tf.model_dir import load_separator
from vsep_tf.priors.spectral import SpectralPrior, build_spectral_prior
from vsep_tf.separators import spectral
from vsep_tf.separators.masks import masks_to_sources, misi, ratio_masks

RATE, PITCHES = TONE_RATE, TONE_PITCHES
SMALL = ["--spectral.n_fft=512", "--spectral.hop=128", "--spectral.latent_dim=4", "--spectral.hidden_units=64"]


_tone, _stem_folder = tone, two_tone_stem_folder


def test_prior_losses_augmentation_and_config():
  prior = build_spectral_prior(n_fft=256, hop=64, latent_dim=3, hidden_units=16, concentration=50.0, eq_db=6.0)
  v = tf.random.uniform([5, 129], 0.0, 1.0)
  losses = prior.compute_losses(v, training=True)
  assert set(losses) == {"total_loss", "reconstruction", "kl"}
  assert all(t.shape == (5,) and np.isfinite(t.numpy()).all() for t in losses.values())
  np.testing.assert_allclose(losses["total_loss"], losses["reconstruction"] + losses["kl"], rtol=1e-5)
  # the reconstruction is concentration x cross-entropy >= concentration x entropy of the frame's shape
  u = (v / tf.reduce_sum(v, -1, keepdims=True)).numpy()
  entropy = -np.sum(u * np.log(u + 1e-12), axis=-1)
  eval_losses = prior.compute_losses(v, training=False)
  assert np.all(eval_losses["reconstruction"].numpy() >= 50.0 * entropy - 1e-2)
  # gain invariance: the encoder reads the normalised spectrum
  np.testing.assert_allclose(prior.encode(v)[0], prior.encode(7.0 * v)[0], atol=1e-5)
  # the tilt moves energy between low and high bins; eq_db=0 leaves frames alone
  tilted = prior.tilt(tf.ones([200, 129])).numpy()
  assert tilted[:, -1].std() > 0.1 and np.allclose(tilted[:, 0], 1.0)
  flat = build_spectral_prior(n_fft=256, hop=64, latent_dim=3, hidden_units=16)
  assert flat.tilt(v) is v and flat.shift_pitch(v) is v
  # the pitch shift scales the frequency axis: a partial at bin 40 moves within +-1 octave for +-12 semitones
  octave = build_spectral_prior(n_fft=256, hop=64, latent_dim=3, hidden_units=16, pitch_semitones=12.0)
  delta = np.zeros([500, 129], np.float32)
  delta[:, 40] = 1.0
  shifted = octave.shift_pitch(tf.constant(delta)).numpy()
  centre = (shifted * np.arange(129)).sum(-1) / shifted.sum(-1)
  assert 19.9 <= centre.min() < 25 and 75 < centre.max() <= 80.1 and (shifted >= 0).all()
  again = SpectralPrior.from_config(prior.get_config())
  assert again.get_config() == prior.get_config() and again.bins == 129
  shape = again.log_shape(tf.zeros([2, 7, 3]))
  assert shape.shape == (2, 7, 129)
  np.testing.assert_allclose(tf.reduce_sum(tf.exp(shape), -1), 1.0, rtol=1e-5)
  for bad in (dict(latent_dim=0), dict(concentration=0.0), dict(eq_db=-1.0), dict(pitch_semitones=-1.0)):
    with pytest.raises(ValueError):
      build_spectral_prior(**bad)


def test_search_settings_are_checked():
  assert spectral.spectral_search_hyperparameters()["init"] == "encoder"
  with pytest.raises(ValueError, match="init"):
    spectral.spectral_search_hyperparameters(init="random")
  with pytest.raises(ValueError):
    spectral.spectral_search_hyperparameters(learning_rate=0.0)
  a = build_spectral_prior(n_fft=256, hop=64, latent_dim=2, hidden_units=8)
  b = build_spectral_prior(n_fft=512, hop=64, latent_dim=2, hidden_units=8)
  with pytest.raises(ValueError, match="different STFT"):
    spectral.SpectralPriorSeparator({"a": a, "b": b}, RATE, "sum")
  for rho in (-0.1, 1.0):
    with pytest.raises(ValueError, match="temporal_rho"):
      spectral.spectral_search_hyperparameters(temporal_rho=rho)
  with pytest.raises(ValueError, match="phase_iterations"):
    spectral.spectral_search_hyperparameters(phase_iterations=-1)


def test_misi_moves_masked_estimates_towards_signals_with_the_masked_magnitudes():
  """masks.misi from the ideal ratio masks of two tone classes (one with noise): 0 rounds is masks_to_sources; 10
  rounds bring every estimate's STFT magnitude closer to the masked one, raise every source's SI-SDR, and keep
  the estimates adding up to the mixture."""
  rng = np.random.default_rng(5)
  n_fft, hop = 256, 64
  for _ in range(3):
    f, g = rng.choice(PITCHES, size=2, replace=False)
    sources = np.stack([_tone("sine", f, 1.0, rng), _tone("square", g, 1.0, rng)]).astype(np.float32)
    sources[0] += 0.05 * rng.standard_normal(sources.shape[1]).astype(np.float32)
    mix = sources.sum(axis=0)
    spec = signal_lib.stft(mix, n_fft, hop)
    masks = ratio_masks(signal_lib.stft(sources, n_fft, hop), 2.0)
    target = np.abs((tf.cast(masks, tf.complex64) * spec[None]).numpy())
    plain = misi(masks, spec, mix, n_fft, hop, mix.shape[-1], 0).numpy()
    np.testing.assert_array_equal(plain, masks_to_sources(masks, spec, n_fft, hop, mix.shape[-1]).numpy())
    refined = misi(masks, spec, mix, n_fft, hop, mix.shape[-1], 10).numpy()
    np.testing.assert_allclose(refined.sum(axis=0), mix, atol=1e-5)
    gap = [np.abs(np.abs(signal_lib.stft(y, n_fft, hop).numpy()) - target).mean() for y in (plain, refined)]
    assert gap[1] < 0.95 * gap[0], gap
    before = bsseval.si_sdr_scores(sources, plain, mix)["si_sdr"]
    after = bsseval.si_sdr_scores(sources, refined, mix)["si_sdr"]
    assert np.all(after > before + 0.5), (before, after)


def test_temporal_prior_is_the_ar1_gaussian_log_density():
  z = tf.random.stateless_normal([2, 3, 9, 4], seed=[1, 2])
  np.testing.assert_allclose(spectral.latent_prior_energy(z, 0.0), 0.5 * tf.reduce_sum(tf.square(z), [1, 2, 3]),
                             rtol=1e-6)
  rho = 0.8  # 0.5 z' C^-1 z with C[s, t] = rho^|s - t| (each class and latent its own chain over the 9 frames)
  inverse = np.linalg.inv(rho ** np.abs(np.subtract.outer(np.arange(9), np.arange(9))))
  chains = np.moveaxis(z.numpy(), 2, -1)  # [2, 3, 4, 9]
  expected = 0.5 * np.einsum("bnds,st,bndt->b", chains, inverse, chains)
  np.testing.assert_allclose(spectral.latent_prior_energy(z, rho), expected, rtol=1e-4)
  # a latent path that holds still costs less than one that flips sign every frame: what smooths the fit
  steady = tf.ones([1, 1, 9, 1])
  flipping = tf.reshape(tf.constant([(-1.0) ** t for t in range(9)]), [1, 1, 9, 1])
  assert spectral.latent_prior_energy(steady, 0.9) < 0.1 * spectral.latent_prior_energy(flipping, 0.9)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A --job=spectral model directory trained on a two-class stem folder with one track held out."""
  from vsep_tf.training import trainer as trainer_lib  # pylint: disable=import-outside-toplevel
  root = _stem_folder(tmp_path_factory.mktemp("stems"))
  model_dir = tmp_path_factory.mktemp("model") / "spectral"
  cfg = run_flags.parse_flags([
      f"--model_dir={model_dir}", "--job=spectral", "--dataset=stems", f"--data_root={root}",
      "--valid_tracks=1", "--train_steps=400", "--batch_size=64", "--learning_rate=3e-3", "--grad_clip_norm=0",
      "--steps_per_loop=50", "--checkpoint_every=200", "--spectral_search.iterations=150", *SMALL])
  trainer = trainer_lib.get_trainer("spectral")(cfg, None)
  run_flags.save_config(cfg, str(model_dir))  # as vsep_tf.train does
  first = trainer.train(num_steps=20)
  metrics = trainer.train()
  return root, model_dir, trainer, first, metrics


def test_trainer_learns_each_class_from_solo_frames(trained):
  _, model_dir, trainer, first, metrics = trained
  assert int(trainer.step.numpy()) == 400 and set(metrics) == {"sine", "square", "total_loss"}
  assert metrics["sine"] < first["sine"] and metrics["square"] < first["square"], (first, metrics)
  assert (model_dir / model_dir_lib.MANIFEST_FILENAME).exists() and (model_dir / "checkpoints" / "checkpoint").exists()
  # only the 3 train tracks were read: the held-out track is not in the data
  assert sorted(t.name for t in trainer.data._tracks["valid"]) and len(trainer.data._tracks["train"]) == 3


def test_separates_two_tone_classes_and_the_fit_lowers_its_objective(trained):
  _, model_dir, _, _, _ = trained
  sep = load_separator(str(model_dir))
  assert isinstance(sep, spectral.SpectralPriorSeparator) and sep.source_names == ("sine", "square")
  assert sep.settings["iterations"] == 150 and sep.n_fft == 512
  rng = np.random.default_rng(99)  # new notes, pairs and phases
  pairs = [rng.choice(PITCHES, size=2, replace=False) for _ in range(4)]
  sources = np.stack([np.stack([_tone("sine", f, 1.0, rng), _tone("square", g, 1.0, rng)]) for f, g in pairs])
  mixes = sources.sum(axis=1)
  est = np.asarray(sep.separate(mixes))
  assert est.shape == sources.shape and np.isfinite(est).all()
  np.testing.assert_allclose(est.sum(axis=1), mixes, atol=2e-3)  # Wiener masks of the sum
  gains = np.stack([bsseval.si_sdr_scores(sources[i], est[i], mixes[i])["si_sdri"] for i in range(4)])
  assert np.median(gains) > 10.0, gains
  # the MAP fit: more iterations explain the mixture at least as well under the same prior weight
  mag = tf.abs(tf.signal.stft(tf.constant(mixes), 512, 128, fft_length=512))
  def objective(iterations):
    fit = spectral.SpectralPriorSeparator(sep.priors, RATE, "sum", iterations=iterations)
    y = tf.reduce_sum(fit.source_models(mag), axis=1) + 1e-8
    return float(tf.reduce_sum(mag * tf.math.log((mag + 1e-8) / y) - mag + y))
  assert objective(100) < 0.7 * objective(0)
  with pytest.raises(ValueError, match="batch, time"):
    sep.separate(mixes[0])
  # MISI rounds after the masks (a setting of the model directory): still adding up to the mix, mono and stereo
  phased = load_separator(str(model_dir), ["--spectral_search.phase_iterations=5"])
  assert phased.settings["phase_iterations"] == 5 and phased.describe()["phase_iterations"] == 5
  est5 = np.asarray(phased.separate(mixes))
  np.testing.assert_allclose(est5.sum(axis=1), mixes, atol=2e-3)
  assert np.abs(est5 - est).max() > 1e-3
  gains5 = np.stack([bsseval.si_sdr_scores(sources[i], est5[i], mixes[i])["si_sdri"] for i in range(4)])
  assert np.median(gains5) > 10.0, gains5
  stereo = np.stack([mixes[:2], 0.5 * mixes[:2]], axis=1)  # [2, 2 channels, T]
  est_stereo = phased.separate_channels(stereo)
  np.testing.assert_allclose(est_stereo.sum(axis=2), stereo, atol=2e-3)


def test_quality_presets(trained):
  """model_dir.QUALITIES: 'best' is the saved settings; 'fast' is a spectral_encoder's one pass, 'balanced' 50 MAP
  iterations (a shipped one saves a 300-step fit); neither changes a --job=spectral model (no amortised encoder:
  one setting); explicit overrides win over the preset."""
  _, model_dir, _, _, _ = trained
  assert model_dir_lib.quality_overrides(model_dir_lib.load_config(str(model_dir)), "fast") == []
  assert load_separator(str(model_dir), quality="fast").settings == load_separator(str(model_dir)).settings
  shipped = "pretrained/chorales"
  assert model_dir_lib.load_config(shipped).job == "spectral_encoder"
  assert load_separator(shipped).settings["iterations"] == 300
  assert load_separator(shipped, quality="fast").settings["iterations"] == 0
  assert load_separator(shipped, quality="balanced").settings["iterations"] == 50
  # MISI rounds: the saved ones in 'balanced' and 'best', none in 'fast' (an override still wins)
  assert [load_separator(shipped, quality=q).settings["phase_iterations"] for q in ("fast", "balanced", "best")] \
      == [0, 10, 10]
  assert load_separator(shipped, ["--spectral_search.phase_iterations=3"], quality="fast").settings[
      "phase_iterations"] == 3
  assert model_dir_lib.quality_overrides(model_dir_lib.load_config(str(model_dir)), "balanced") == []
  assert load_separator(shipped, ["--spectral_search.iterations=7"], quality="fast").settings["iterations"] == 7
  with pytest.raises(ValueError, match="quality"):
    model_dir_lib.quality_overrides(model_dir_lib.load_config(shipped), "medium")


def test_evaluate_reads_the_models_held_out_split(trained):
  from vsep_tf import evaluate as evaluate_lib  # pylint: disable=import-outside-toplevel
  root, model_dir, _, _, _ = trained
  fv = evaluate_lib.define_flags(flags.FlagValues())
  fv(["x", f"--model_dir={model_dir}", "--split=valid", "--num_workers=0"])
  opts = evaluate_lib.options_from_flags(fv, str(model_dir))
  assert opts.valid_tracks == 1 and opts.data_root == str(root)
  r = evaluate_lib.evaluate(opts, model_dir=str(model_dir), verbose=0)
  assert r["method"] == "spectral" and r["num_tracks"] == 1 and r["split"] == "valid"
  assert r["overall"]["si_sdri"] > 5.0, r["overall"]



def test_ship_weights_only_drops_the_optimizer_state(trained, tmp_path):
  import shutil  # pylint: disable=import-outside-toplevel
  from tools import ship_model  # pylint: disable=import-outside-toplevel
  _, model_dir, _, _, _ = trained
  out = tmp_path / "shipped"
  prefix = ship_model.ship(str(model_dir), str(out), weights_only=True)
  assert prefix.endswith("ckpt-400")
  assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
      "checkpoint", "ckpt-400.data-00000-of-00001", "ckpt-400.index"]
  def size(d):
    return sum(f.stat().st_size for f in d.glob("ckpt-400.*"))
  assert size(out / "checkpoints") < 0.5 * size(model_dir / "checkpoints")  # Adam's two moments are gone
  mix = np.random.default_rng(1).standard_normal([1, 4000]).astype(np.float32) * 0.1
  np.testing.assert_array_equal(load_separator(str(out)).separate(mix), load_separator(str(model_dir)).separate(mix))
  # a manifest written before a setting existed: --set gives it one (the fit's temporal prior here)
  older = tmp_path / "older"
  shutil.copytree(model_dir, older)
  manifest = model_dir_lib.read_manifest(str(older))
  del manifest["settings"]["spectral_search.temporal_rho"]
  (older / model_dir_lib.MANIFEST_FILENAME).write_text(json.dumps(manifest))
  assert load_separator(str(older)).settings["temporal_rho"] == 0.0
  ship_model.ship(str(older), str(tmp_path / "set"), overrides=["spectral_search.temporal_rho=0.9"])
  assert model_dir_lib.read_manifest(str(tmp_path / "set"))["settings"]["spectral_search.temporal_rho"] == 0.9
  assert load_separator(str(tmp_path / "set")).settings["temporal_rho"] == 0.9
  other = tmp_path / "other"
  shutil.copytree(model_dir, other)
  manifest = model_dir_lib.read_manifest(str(other))
  manifest["separator"], manifest["settings"]["job"] = "nmf", "nmf"
  (other / model_dir_lib.MANIFEST_FILENAME).write_text(json.dumps(manifest))
  with pytest.raises(ValueError, match="--weights_only supports spectral, .* models; .* is nmf"):
    ship_model.ship(str(other), str(tmp_path / "refused"), weights_only=True)
  assert not (tmp_path / "refused").exists()


def test_exports_to_saved_model_but_refuses_tflite(trained, tmp_path):
  from vsep_tf.export import saved_model, tflite  # pylint: disable=import-outside-toplevel
  _, model_dir, _, _, _ = trained
  sep = load_separator(str(model_dir))
  path = saved_model.export_saved_model(sep, str(tmp_path / "exports"), "spectral", chunk_length=8000)
  served = saved_model.SavedModelSeparator(path)
  assert served.method == "saved_model/spectral" and served.source_names == sep.source_names
  mix = (0.2 * np.sin(2 * np.pi * 220 * np.arange(8000) / RATE)[None]).astype(np.float32)
  np.testing.assert_allclose(served.separate(mix), sep.separate(mix), atol=1e-4)
  with pytest.raises(ValueError, match="does not convert to TFLite"):
    tflite.convert(str(tmp_path / "exports" / "spectral"))


def test_amortised_encoder_trains_on_mixes_alone_and_separates_in_one_pass(trained, tmp_path):
  from vsep_tf.training import trainer as trainer_lib  # pylint: disable=import-outside-toplevel
  root, prior_dir, _, _, _ = trained
  model_dir = tmp_path / "encoder"
  cfg = run_flags.parse_flags([
      f"--model_dir={model_dir}", "--job=spectral_encoder", f"--prior_dir={prior_dir}", "--dataset=stems",
      f"--data_root={root}", "--valid_tracks=1", "--crop_length=8000", "--batch_size=8", "--train_steps=300",
      "--learning_rate=3e-3", "--grad_clip_norm=0", "--steps_per_loop=50", "--checkpoint_every=300",
      "--spectral_encoder.hidden_units=64", "--spectral_search.iterations=0"])
  trainer = trainer_lib.get_trainer("spectral_encoder")(cfg, None)
  frozen = [v.numpy().copy() for p in trainer.priors.values() for v in p.weights]
  first = trainer.train(num_steps=10)
  last = trainer.train()
  assert last["total_loss"] < first["total_loss"] and set(last) == {"total_loss", "data", "kl"}
  assert all(np.array_equal(a, v.numpy()) for a, v in zip(frozen, [v for p in trainer.priors.values()
                                                                   for v in p.weights]))  # priors frozen
  assert next(iter(trainer.dataset)).keys() == {"mix"}  # the sources never reach the training step
  sep = load_separator(str(model_dir))
  assert isinstance(sep, spectral.SpectralPriorSeparator) and sep.encoder is not None
  assert sep.settings["iterations"] == 0 and sep.describe()["amortised_encoder"]
  rng = np.random.default_rng(7)
  pairs = [rng.choice(PITCHES, size=2, replace=False) for _ in range(4)]
  sources = np.stack([np.stack([_tone("sine", f, 1.0, rng), _tone("square", g, 1.0, rng)]) for f, g in pairs])
  mixes = sources.sum(axis=1)
  est = np.asarray(sep.separate(mixes))  # one forward pass
  gains = np.stack([bsseval.si_sdr_scores(sources[i], est[i], mixes[i])["si_sdri"] for i in range(4)])
  assert np.median(gains) > 5.0, gains
  assert model_dir_lib.read_manifest(str(model_dir))["components"] == {"priors": str(prior_dir)}  # outside it
  from tools import ship_model  # pylint: disable=import-outside-toplevel
  shipped = tmp_path / "shipped"  # the encoder alone (no Adam state), its priors inside it, named relatively
  ship_model.ship(str(model_dir), str(shipped), weights_only=True)
  assert model_dir_lib.read_manifest(str(shipped))["components"] == {"priors": "priors"}
  assert (shipped / "priors" / model_dir_lib.MANIFEST_FILENAME).exists()
  np.testing.assert_array_equal(load_separator(str(shipped)).separate(mixes[:1]), est[:1])
  bad = run_flags.parse_flags([f"--model_dir={tmp_path / 'bad'}", "--job=spectral_encoder", "--dataset=stems",
                               f"--data_root={root}"])
  with pytest.raises(ValueError, match="needs --prior_dir"):
    trainer_lib.get_trainer("spectral_encoder")(bad, None)


def test_wavenet_encoder_sees_its_receptive_field_of_frames_and_no_further():
  enc = spectral.SpectralEncoder(3, 65, 4, **spectral.build_spectral_encoder(
      hidden_units=16, arch="wavenet", wavenet_blocks=1, wavenet_layers=3))
  assert enc.receptive_field_frames == 2 * (2 ** 3 - 1) + 1  # 3 taps, dilations 1, 2, 4: +-7 frames
  x = np.random.default_rng(0).uniform(0.1, 1.0, (1, 40, 65)).astype(np.float32)
  mu, logvar, log_share = (t.numpy() for t in enc(x))
  assert mu.shape == logvar.shape == (1, 3, 40, 4) and log_share.shape == (1, 3, 40)
  np.testing.assert_allclose(np.exp(log_share).sum(axis=1), 1.0, rtol=1e-5)

  def reshaped(frame):  # the same mass (the level feature is relative to the crop's mean), another shape
    y = x.copy()
    y[0, frame] = x[0, frame].sum() / 65
    return y

  def change_at_20(y):
    return np.abs(enc(y)[0].numpy()[0, :, 20] - mu[0, :, 20]).max()

  assert change_at_20(reshaped(27)) > 1e-4   # 7 frames away: inside
  assert change_at_20(reshaped(13)) > 1e-4
  assert change_at_20(reshaped(28)) < 1e-6   # 8 frames away: outside
  assert change_at_20(reshaped(12)) < 1e-6
  with pytest.raises(ValueError, match="arch"):
    spectral.build_spectral_encoder(arch="lstm")
  restored = spectral.SpectralEncoder.from_config(enc.get_config())
  assert restored.arch == "wavenet" and restored.receptive_field_frames == enc.receptive_field_frames


@pytest.mark.slow
def test_wavenet_encoder_trained_by_the_map_objective_separates_in_one_pass(trained, tmp_path):
  from vsep_tf.training import trainer as trainer_lib  # pylint: disable=import-outside-toplevel
  root, prior_dir, _, _, _ = trained
  model_dir = tmp_path / "encoder"
  cfg = run_flags.parse_flags([
      f"--model_dir={model_dir}", "--job=spectral_encoder", f"--prior_dir={prior_dir}", "--dataset=stems",
      f"--data_root={root}", "--valid_tracks=1", "--crop_length=8000", "--batch_size=8", "--train_steps=300",
      "--learning_rate=3e-3", "--grad_clip_norm=0", "--steps_per_loop=50", "--checkpoint_every=300",
      "--spectral_encoder.arch=wavenet", "--spectral_encoder.hidden_units=32", "--spectral_encoder.wavenet_layers=4",
      "--spectral_encoder.wavenet_blocks=1", "--encoder_objective=map", "--spectral_search.prior_weight=0.3",
      "--spectral_search.iterations=0"])
  trainer = trainer_lib.get_trainer("spectral_encoder")(cfg, None)
  first = trainer.train(num_steps=10)
  last = trainer.train()
  assert last["total_loss"] < first["total_loss"]
  sep = load_separator(str(model_dir))
  assert sep.encoder.arch == "wavenet" and sep.settings["iterations"] == 0
  assert model_dir_lib.read_manifest(str(model_dir))["settings"]["encoder_objective"] == "map"
  rng = np.random.default_rng(7)
  pairs = [rng.choice(PITCHES, size=2, replace=False) for _ in range(4)]
  sources = np.stack([np.stack([_tone("sine", f, 1.0, rng), _tone("square", g, 1.0, rng)]) for f, g in pairs])
  mixes = sources.sum(axis=1)
  est = np.asarray(sep.separate(mixes))
  gains = np.stack([bsseval.si_sdr_scores(sources[i], est[i], mixes[i])["si_sdri"] for i in range(4)])
  assert np.median(gains) > 5.0, gains
