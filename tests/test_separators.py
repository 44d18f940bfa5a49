"""Separators: mixture consistency, Langevin against a closed-form posterior, the encoder and its trainers."""
import math
import os

import numpy as np
import pytest
import tensorflow as tf

from vsep_tf import run_flags
from vsep_tf.model_dir import MANIFEST_FILENAME, load_separator, read_manifest
from vsep_tf.priors.base import Prior
from vsep_tf.separators import consistency_projection
from vsep_tf.separators import encoder as encoder_lib
from vsep_tf.separators.langevin import LangevinSeparator
from vsep_tf.research.sleep_trainer import SleepDistillTrainer
from vsep_tf.training import separator_trainer, trainer as trainer_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class WhiteGaussianPrior(Prior):
  """s ~ N(0, std^2 I): p_sigma = N(0, (std^2 + sigma^2) I), closed form."""

  def __init__(self, std, **kwargs):
    super().__init__(**kwargs)
    self.std = float(std)

  def log_prob(self, x, sigma, training=False):
    var = self.std ** 2 + tf.cast(sigma, tf.float32)[:, None] ** 2
    return tf.reduce_sum(-0.5 * tf.square(x) / var - 0.5 * tf.math.log(2 * math.pi * var), axis=1)


@pytest.mark.parametrize("mix", ["sum", "mean"])
def test_consistency_projection_makes_estimates_add_up(mix):
  rng = np.random.default_rng(0)
  est = rng.normal(size=[3, 4, 100]).astype(np.float32)
  m = rng.normal(size=[3, 100]).astype(np.float32)
  out = consistency_projection(est, m, mix).numpy()
  f = out.sum(1) if mix == "sum" else out.mean(1)
  np.testing.assert_allclose(f, m, atol=1e-5)
  # the correction is the same for every source
  np.testing.assert_allclose(np.diff(out - est, axis=1), 0.0, atol=1e-5)


def test_langevin_samples_the_gaussian_posterior():
  """Two white Gaussian sources, m = s1 + s2. At the last level sigma the chain targets
  p_sigma(x1) p_sigma(x2) N(m; x1 + x2, L), L = sigma^2 c / 2 (c = 2 for a sum of two), whose marginal for x1
  is N(g m, v): g = A / (A + B + L), v = A (B + L) / (A + B + L), A = a^2 + sigma^2, B = b^2 + sigma^2."""
  a, b, sigma_min = 1.0, 0.5, 0.1
  priors = {"loud": WhiteGaussianPrior(a), "quiet": WhiteGaussianPrior(b)}
  sep = LangevinSeparator(priors, sample_rate=8000, mix="sum", sigma_max=1.0, sigma_min=sigma_min, num_levels=4,
                          steps_per_level=150, step_scale=0.003, final_denoise=False, jit_compile=False)
  rng = np.random.default_rng(1)
  s = np.stack([a * rng.normal(size=[2, 4000]), b * rng.normal(size=[2, 4000])], axis=1).astype(np.float32)
  m = s.sum(1)
  est = sep.separate(m).numpy()
  assert est.shape == (2, 2, 4000)
  np.testing.assert_allclose(est.sum(1), m, atol=1e-4)  # mixture consistency
  big_a, big_b, lik = a ** 2 + sigma_min ** 2, b ** 2 + sigma_min ** 2, sigma_min ** 2
  gain = big_a / (big_a + big_b + lik)
  post_var = big_a * (big_b + lik) / (big_a + big_b + lik)
  fitted_gain = float(np.sum(est[:, 0] * m) / np.sum(m * m))
  assert abs(fitted_gain - gain) < 0.03, (fitted_gain, gain)
  resid_var = float(np.var(est[:, 0] - gain * m))
  assert 0.75 * post_var < resid_var < 1.25 * post_var, (resid_var, post_var)


def test_langevin_mixing_term_is_stable_for_a_sum_of_many_sources():
  """BASIS step sizes on a SUM of 4 sources: the residual must shrink, not blow up."""
  priors = {f"s{k}": WhiteGaussianPrior(0.5) for k in range(4)}
  sep = LangevinSeparator(priors, sample_rate=8000, mix="sum", num_levels=10, steps_per_level=5,
                          final_denoise=False, jit_compile=False)
  m = tf.random.normal([1, 2000])
  est = sep.separate(m).numpy()
  assert np.all(np.isfinite(est)) and np.abs(est).max() < 20


def test_encoder_outputs_are_consistent_and_local():
  enc = encoder_lib.build_encoder(3, "mean", num_blocks=1, num_layers=3, residual_channels=8, skip_channels=8)
  m = tf.random.normal([2, 500])
  mean, log_std = enc(m)
  assert mean.shape == (2, 3, 500) and log_std.shape == (2, 3, 500)
  np.testing.assert_allclose(tf.reduce_mean(mean, 1).numpy(), m.numpy(), atol=1e-5)
  assert enc.receptive_field == 2 * (1 + 2 + 4) + 1
  # non-causal and local: changing sample 250 moves outputs within the receptive field only
  m2 = tf.tensor_scatter_nd_update(m, [[0, 250]], [5.0])
  diff = np.abs(enc(m2)[0].numpy() - mean.numpy())[0].max(0)
  half = enc.receptive_field // 2
  assert diff[250 - half:250 + half + 1].max() > 0
  assert diff[:250 - half].max() == 0 and diff[250 + half + 1:].max() == 0


def test_framed_encoder_is_consistent_local_per_frame_and_rebuilds():
  # frame_size=8: the WaveNet steps over frames of 8 samples; any length (501 is not a multiple of 8) comes back.
  tf.keras.utils.set_random_seed(1)
  enc = encoder_lib.build_encoder(3, "mean", num_blocks=1, num_layers=3, residual_channels=8, skip_channels=8,
                                  frame_size=8)
  m = tf.random.normal([2, 501])
  mean, log_std = enc(m)
  assert mean.shape == (2, 3, 501) and log_std.shape == (2, 3, 501)
  np.testing.assert_allclose(tf.reduce_mean(mean, 1).numpy(), m.numpy(), atol=1e-5)
  assert enc.receptive_field == (2 * (1 + 2 + 4) + 1) * 8
  # Sample 250 lies in frame 31; the WaveNet's reach is 7 frames either side, so exactly frames 24..38 move.
  m2 = tf.tensor_scatter_nd_update(m, [[0, 250]], [5.0])
  diff = np.abs(enc(m2)[0].numpy() - mean.numpy())[0].max(0)
  assert all(diff[f * 8:(f + 1) * 8].max() > 0 for f in range(24, 39))  # every frame in reach moves
  assert diff[:24 * 8].max() == 0 and diff[39 * 8:].max() == 0
  clone = encoder_lib.SeparationEncoder.from_config(enc.get_config())
  assert clone.frame_size == 8 and clone.receptive_field == enc.receptive_field
  with pytest.raises(ValueError, match="frame_size"):
    encoder_lib.build_encoder(2, "sum", frame_size=0)


def test_elbo_gradients_reach_the_encoder_only():
  enc = encoder_lib.build_encoder(2, "sum", num_blocks=1, num_layers=2, residual_channels=4, skip_channels=4)
  priors = [WhiteGaussianPrior(1.0), WhiteGaussianPrior(0.5)]
  m = tf.random.normal([2, 64])
  with tf.GradientTape() as tape:
    losses = encoder_lib.elbo_losses(enc, priors, m, 0.1, mix_sigma=0.05)
    total = tf.reduce_mean(losses["total_loss"])
  grads = tape.gradient(total, enc.trainable_variables)
  assert all(g is not None for g in grads) and any(float(tf.norm(g)) > 0 for g in grads)
  for k in ("prior_nll", "mix_nll", "neg_entropy"):
    assert losses[k].shape == (2,)
  np.testing.assert_allclose(losses["total_loss"], losses["prior_nll"] + losses["mix_nll"] + losses["neg_entropy"],
                             rtol=1e-5)


def test_annealed_sigma_is_geometric_then_held():
  s = [float(encoder_lib.annealed_sigma(t, 10, 1.0, 0.01)) for t in (0, 5, 10, 20)]
  np.testing.assert_allclose(s, [1.0, 0.1, 0.01, 0.01], rtol=1e-5)


def _fv(*args):
  """The Config of the toy data flagfile plus `args`."""
  return run_flags.parse_flags([f"--flagfile={os.path.join(REPO, 'configs/data/toy.flags')}", *args])


TINY_PRIOR = ["--wavenet.num_blocks=1", "--wavenet.num_layers=3", "--wavenet.residual_channels=4",
              "--wavenet.skip_channels=4", "--wavenet.cond_channels=4", "--wavenet.num_mixtures=2"]
TINY_ENCODER = ["--encoder.num_blocks=1", "--encoder.num_layers=4", "--encoder.residual_channels=8",
                "--encoder.skip_channels=8"]
RUN = ["--crop_length=512", "--batch_size=4", "--steps_per_loop=5", "--warmup_steps=1",
       "--audio_summary_seconds=0", "--valid_examples=4"]


@pytest.fixture(scope="module")
def tiny_prior_dir(tmp_path_factory):
  model_dir = str(tmp_path_factory.mktemp("priors"))
  fv = _fv("--job=priors", *TINY_PRIOR, *RUN, f"--model_dir={model_dir}", "--train_steps=5",
           "--checkpoint_every=5")
  trainer_lib.PriorTrainer(fv).train()
  run_flags.save_config(fv, model_dir)  # as vsep_tf.train does
  return model_dir


def test_supervised_trainer_learns_and_loads(tmp_path):
  model_dir = str(tmp_path / "sup")
  fv = _fv("--job=supervised", *TINY_ENCODER, *RUN, f"--model_dir={model_dir}", "--train_steps=200",
           "--checkpoint_every=200", "--learning_rate=1e-2")
  trainer = trainer_lib.get_trainer("supervised")(fv)
  before = np.mean(list(trainer.validate().values()))
  metrics = trainer.train()
  after = np.mean(list(trainer.validate().values()))
  assert np.isfinite(metrics["total_loss"])
  assert after > before + 1.0, (before, after)  # SI-SDR on held-out mixes improves
  sep = load_separator(model_dir)
  assert sep.method == "supervised" and sep.source_names == ("sine", "square", "sawtooth", "triangle")
  m = tf.random.normal([2, 700])
  np.testing.assert_allclose(sep.separate(m).numpy(), trainer.encoder(m)[0].numpy(), atol=1e-5)


def test_variational_trainer_sees_mixes_only(tiny_prior_dir, tmp_path):
  model_dir = str(tmp_path / "var")
  fv = _fv("--job=variational", f"--prior_dir={tiny_prior_dir}", *TINY_ENCODER, *RUN,
           f"--model_dir={model_dir}", "--train_steps=10", "--checkpoint_every=10")
  trainer = separator_trainer.SeparatorTrainer(fv)
  batch = next(iter(trainer.dataset))
  assert set(batch) == {"mix"}  # the ground truth never reaches the step
  assert not any(v.trainable for p in trainer.priors for v in p.variables)
  frozen = [v.numpy().copy() for p in trainer.priors for v in p.variables]
  metrics = trainer.train()
  assert all(np.isfinite(v) for v in metrics.values())
  for before, v in zip(frozen, [v for p in trainer.priors for v in p.variables]):
    np.testing.assert_array_equal(before, v.numpy())
  assert load_separator(model_dir).method == "variational"


def test_variational_needs_prior_dir(tmp_path):
  fv = _fv("--job=variational", *TINY_ENCODER, *RUN, f"--model_dir={tmp_path}")
  with pytest.raises(ValueError, match="--prior_dir"):
    separator_trainer.SeparatorTrainer(fv)


@pytest.mark.slow  # research path (not the product's): the slow lane (pytest -m slow), for the 12-minute default run
def test_langevin_from_prior_dir(tiny_prior_dir):
  sep = load_separator(tiny_prior_dir, ["--langevin_levels=2", "--langevin_steps_per_level=2"])
  assert isinstance(sep, LangevinSeparator) and sep.mix == "mean"
  assert len(sep.sigmas) == 2 and sep.steps_per_level == 2  # the overrides are honoured
  m = tf.random.normal([1, 300]) * 0.5
  est = sep.separate(m).numpy()
  assert est.shape == (1, 4, 300) and np.all(np.isfinite(est))
  np.testing.assert_allclose(est.mean(1), m.numpy(), atol=1e-5)


@pytest.mark.slow  # research path (not the product's): the slow lane (pytest -m slow), for the 12-minute default run
def test_variational_distills_a_teacher_then_maximises_the_elbo(tiny_prior_dir, tmp_path):
  """--teacher_dir (an NMF dir: solo-audio supervision only) feeds teacher estimates, never the sources."""
  nmf_dir = str(tmp_path / "nmf")
  nmf_fv = _fv("--job=nmf", f"--model_dir={nmf_dir}", "--nmf.num_atoms=4", "--nmf.n_fft=256", "--nmf.hop=64",
               "--nmf.train_iterations=5", "--nmf.separate_iterations=5", "--nmf.max_train_seconds=1",
               "--nmf.max_train_frames=200")
  trainer_lib.get_trainer("nmf")(nmf_fv).train()
  model_dir = str(tmp_path / "var")
  fv = _fv("--job=variational", f"--prior_dir={tiny_prior_dir}", f"--teacher_dir={nmf_dir}", "--distill_steps=5",
           *TINY_ENCODER, *RUN, f"--model_dir={model_dir}", "--train_steps=10", "--checkpoint_every=5")
  trainer = SleepDistillTrainer(fv)
  assert set(next(iter(trainer.dataset))) == {"mix"}  # the ELBO phase's data: mixes only
  batch = next(iter(trainer.phase_dataset("distill")))  # the targets of the distill phase: the teacher's estimates
  assert set(batch) == {"mix", "sources"} and batch["sources"].shape == (4, 4, 512)
  np.testing.assert_allclose(batch["sources"].numpy(), trainer.teacher.separate(batch["mix"]).numpy(), atol=1e-5)
  np.testing.assert_allclose(batch["sources"].numpy().mean(1), batch["mix"].numpy(), atol=1e-3)
  metrics = trainer.train()
  assert int(trainer.step.numpy()) == 10 and trainer.phase == "elbo"
  assert "prior_nll" in metrics and np.isfinite(metrics["total_loss"])


def test_init_from_warm_starts_the_encoder(tiny_prior_dir, tmp_path):
  sup_dir = str(tmp_path / "sup")
  fv = _fv("--job=supervised", *TINY_ENCODER, *RUN, f"--model_dir={sup_dir}", "--train_steps=5",
           "--checkpoint_every=5", "--valid_examples=0")
  source = trainer_lib.get_trainer("supervised")(fv)
  source.train()
  fv = _fv("--job=variational", f"--prior_dir={tiny_prior_dir}", f"--init_from={sup_dir}", *TINY_ENCODER, *RUN,
           f"--model_dir={tmp_path / 'var'}", "--seed=7")
  trainer = separator_trainer.SeparatorTrainer(fv)
  assert not np.allclose(trainer.encoder.get_weights()[0], source.encoder.get_weights()[0])
  trainer.on_first_batch(None)
  for a, b in zip(trainer.encoder.get_weights(), source.encoder.get_weights()):
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow  # research path (not the product's): the slow lane (pytest -m slow), for the 12-minute default run
def test_sleep_phase_trains_on_prior_samples_only(tiny_prior_dir, tmp_path):
  """--sleep_steps: mixes of samples DRAWN FROM THE PRIORS (cached bank), then the ELBO on real mixes."""
  model_dir = str(tmp_path / "var")
  fv = _fv("--job=variational", f"--prior_dir={tiny_prior_dir}", "--sleep_steps=4", "--sleep_bank_size=3",
           *TINY_ENCODER, *RUN, f"--model_dir={model_dir}", "--train_steps=6", "--checkpoint_every=2")
  trainer = SleepDistillTrainer(fv)
  bank = trainer.bank
  assert bank.shape == (4, 3, 2 * 512) and np.all(np.isfinite(bank))
  with np.load(f"{model_dir}/prior_samples.npz") as f:
    np.testing.assert_array_equal(f["samples"], bank)
  # The bank is the priors' own: re-drawing with the same seed gives the same samples.
  np.testing.assert_allclose(trainer.priors[0].sample(3, 1024, sigma=0.0, seed=fv.seed * 1000).numpy(), bank[0],
                             atol=1e-6)
  batch = next(iter(trainer.sleep_dataset()))
  assert batch["sources"].shape == (4, 4, 512)
  np.testing.assert_allclose(batch["mix"].numpy(), batch["sources"].numpy().mean(1), atol=1e-6)
  for k in range(4):  # every source crop is a crop of one of its class's bank samples
    for s in batch["sources"].numpy()[:, k]:
      assert any(np.allclose(s, row[o:o + 512]) for row in bank[k] for o in range(1024 - 512 + 1))
  assert set(next(iter(trainer.dataset))) == {"mix"}  # the real data still carries mixes only
  assert trainer.phases() == [("sleep", 4), ("elbo", 6)]
  metrics = trainer.train()
  assert int(trainer.step.numpy()) == 6 and trainer.phase == "elbo" and "prior_nll" in metrics
  # A restart reuses the cached bank instead of sampling again.
  again = SleepDistillTrainer(fv)
  np.testing.assert_array_equal(again.bank, bank)


@pytest.mark.slow  # research path (not the product's): the slow lane (pytest -m slow), for the 12-minute default run
def test_sleep_level_match_and_gain_scale_the_prior_samples(tiny_prior_dir, tmp_path):
  """--sleep_match_level: one factor per class brings the bank to the RMS of the solo training audio (tiny priors
  draw at levels far from the toy's 0.4-0.7); --sleep_gain_db=6: on top, every source of a sleep mix gets ONE
  random gain in [-6, +6] dB; the mix is made of the scaled sources."""
  fv = _fv("--job=variational", f"--prior_dir={tiny_prior_dir}", "--sleep_steps=4", "--sleep_bank_size=3",
           "--sleep_match_level", "--sleep_gain_db=6", *TINY_ENCODER, *RUN, f"--model_dir={tmp_path / 'var'}",
           "--train_steps=4")
  trainer = SleepDistillTrainer(fv)
  level = trainer.bank_level_gains()
  batch = next(iter(trainer.data.mixtures("train", length=4096, batch_size=64, seed=99)))  # other crops
  real_rms = np.sqrt(np.mean(np.square(batch["sources"].numpy()), axis=(0, 2)))
  matched = trainer.bank * level[:, None, None]
  np.testing.assert_allclose(np.sqrt(np.mean(np.square(matched), axis=(1, 2))), real_rms, rtol=0.1)
  batch = next(iter(trainer.sleep_dataset()))
  sources = batch["sources"].numpy()
  np.testing.assert_allclose(batch["mix"].numpy(), sources.mean(1), atol=1e-6)
  gains = []
  for k in range(4):
    for s in sources[:, k]:
      crops = [row[o:o + 512] for row in matched[k] for o in range(1024 - 512 + 1)]
      fits = [(float(np.dot(s, c) / np.dot(c, c)), c) for c in crops if np.dot(c, c) > 0]
      gain, crop = max(fits, key=lambda gc: -np.abs(s - gc[0] * gc[1]).max())
      np.testing.assert_allclose(s, gain * crop, atol=1e-5)  # a scaled crop of one level-matched bank sample
      gains.append(gain)
  gains_db = 20 * np.log10(np.array(gains))
  assert gains_db.min() >= -6.0 - 1e-3 and gains_db.max() <= 6.0 + 1e-3
  assert gains_db.std() > 1.0  # really random, not all ~0 dB


@pytest.mark.slow  # research path (not the product's): the slow lane (pytest -m slow), for the 12-minute default run
def test_resumed_run_ends_each_phase_at_its_step(tiny_prior_dir, tmp_path):
  """A run stopped inside the sleep phase resumes it up to --sleep_steps, not --sleep_steps MORE steps."""
  model_dir = str(tmp_path / "var")
  common = ["--job=variational", f"--prior_dir={tiny_prior_dir}", "--sleep_bank_size=3", *TINY_ENCODER, *RUN,
            f"--model_dir={model_dir}", "--checkpoint_every=2"]
  SleepDistillTrainer(_fv(*common, "--sleep_steps=2", "--train_steps=2")).train()

  class Recorder(SleepDistillTrainer):
    seen = []

    def on_checkpoint(self, writer, step):
      self.seen.append((step, self.phase))

  trainer = Recorder(_fv(*common, "--sleep_steps=4", "--train_steps=6"))
  trainer.train()
  assert Recorder.seen == [(4, "sleep"), (6, "elbo")]
  # Restarted after its sleep phase, a run never draws the prior-sample bank again (it used to, for minutes).
  os.remove(os.path.join(model_dir, "prior_samples.npz"))
  Recorder(_fv(*common, "--sleep_steps=4", "--train_steps=6")).train()
  assert len(Recorder.seen) == 2 and not os.path.exists(os.path.join(model_dir, "prior_samples.npz"))


TINY_SCORE = ["--prior=score", "--score.num_layers=3", "--score.residual_channels=4", "--score.skip_channels=4",
              "--score.cond_channels=4", "--score.sample_steps=4", "--p_clean=0"]


@pytest.mark.slow  # research path (not the product's): the slow lane (pytest -m slow), for the 12-minute default run
def test_score_priors_drive_sleep_then_elbo_and_langevin(tmp_path):
  """The whole unsupervised pipeline on score priors: prior training, sleep phase on their samples, ELBO."""
  prior_dir = str(tmp_path / "score_priors")
  fv = _fv("--job=priors", *TINY_SCORE, *RUN, f"--model_dir={prior_dir}", "--train_steps=5", "--checkpoint_every=5")
  trainer_lib.PriorTrainer(fv).train()
  model_dir = str(tmp_path / "var")
  fv = _fv("--job=variational", f"--prior_dir={prior_dir}", *TINY_ENCODER, *RUN, f"--model_dir={model_dir}",
           "--sleep_steps=5", "--sleep_bank_size=3", "--train_steps=10", "--checkpoint_every=5")
  trainer = SleepDistillTrainer(fv)
  assert [p for p, _ in trainer.phases()] == ["sleep", "elbo"]
  assert trainer.bank.shape == (4, 3, 1024) and np.all(np.isfinite(trainer.bank))
  metrics = trainer.train()
  assert int(trainer.step.numpy()) == 10 and all(np.isfinite(v) for v in metrics.values())
  sep = load_separator(prior_dir, ["--langevin_levels=2", "--langevin_steps_per_level=2"])
  m = tf.random.normal([1, 300]) * 0.5
  np.testing.assert_allclose(sep.separate(m).numpy().mean(1), m.numpy(), atol=1e-5)


@pytest.mark.slow  # long: the slow lane (pytest -m slow, a CI lane of its own)
def test_ship_model_keeps_the_latest_checkpoint_only(tiny_prior_dir, tmp_path):
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  out = tmp_path / "shipped"
  cmd = [sys.executable, "-m", "tools.ship_model", f"--model_dir={tiny_prior_dir}", f"--output_dir={out}"]
  proc = subprocess.run([*cmd, "--set=langevin_levels=3"], cwd=REPO, capture_output=True, text=True,
                        timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert sorted(os.listdir(out / "checkpoints")) == ["checkpoint", "ckpt-5.data-00000-of-00001", "ckpt-5.index"]
  assert read_manifest(str(out))["settings"]["langevin_levels"] == 3
  assert not (out / run_flags.CONFIG_FILENAME).exists()  # the manifest is all a shipped model needs
  sep = load_separator(str(out), ["--langevin_steps_per_level=1"])
  assert sep.source_names == ("sine", "square", "sawtooth", "triangle") and len(sep.sigmas) == 3
  bad = subprocess.run([*cmd, "--set=no_such_flag=1"], cwd=REPO, capture_output=True, text=True, timeout=120)
  assert bad.returncode == 1 and "unknown setting 'no_such_flag'" in bad.stderr
  assert sorted(os.listdir(out / "checkpoints"))[0] == "checkpoint"  # the earlier copy is intact
  assert not [p for p in os.listdir(tmp_path) if p.startswith(".ship-")]  # no half-written copy left


@pytest.mark.slow  # long: the slow lane (pytest -m slow, a CI lane of its own)
def test_ship_model_writes_the_manifest_of_a_legacy_directory(tiny_prior_dir, tmp_path):
  """An older model directory (config.flags, no manifest.json) is refused by load_separator with a pointer to
  tools.ship_model, and the shipped copy of it loads."""
  import shutil  # pylint: disable=import-outside-toplevel
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  from vsep_tf.model_dir import ModelDirError  # pylint: disable=import-outside-toplevel
  legacy = tmp_path / "legacy"
  shutil.copytree(tiny_prior_dir, legacy)
  os.remove(legacy / MANIFEST_FILENAME)
  with pytest.raises(ModelDirError, match="tools.ship_model"):
    load_separator(str(legacy))
  out = tmp_path / "shipped"
  proc = subprocess.run([sys.executable, "-m", "tools.ship_model", f"--model_dir={legacy}", f"--output_dir={out}"],
                        cwd=REPO, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert read_manifest(str(out))["settings"] == read_manifest(tiny_prior_dir)["settings"]
  sep = load_separator(str(out), ["--langevin_levels=1", "--langevin_steps_per_level=1"])
  assert isinstance(sep, LangevinSeparator) and sep.source_names == ("sine", "square", "sawtooth", "triangle")
