r"""Spectral VAE prior: a deep prior over the spectral SHAPE of one source class's STFT frames.

A source class is modelled frame by frame in the magnitude-STFT domain: frame t of source k is

    v_kt = g_kt * softmax(f_k(z_kt)),    z_kt ~ N(0, I_latent_dim),    g_kt > 0 free

a gain g (how loud: not what the class is) times a spectral shape on the simplex drawn from the class's
decoder f_k (an MLP). It is NMF's model with the dictionary W_k h replaced by a nonlinear decoder of a
Gaussian latent: the shapes a class can take lie on a learned manifold, not in the cone of 64 atoms, which is
what keeps a violin estimate from explaining the bassoon's harmonics.

Training (per class, on SOLO audio only, `training/spectral_trainer.py`): a VAE on the normalised frames
u = v / sum(v) of the class's non-silent frames, with an amortised encoder q(z | u) = N(mu, diag(exp(logvar)))
read from the normalised log-spectrum:

    loss = concentration * CE(u, softmax(f(z))) + KL(q(z | u) || N(0, I)),    z ~ q(z | u)

CE(u, p) = -sum_f u_f log p_f: the frame is treated as `concentration` draws from its shape (a multinomial
likelihood), which sets how much the data term weighs against the latent prior. The separator
(separators/spectral.py) uses the SAME weighting on the mixture, so the MAP it computes is the posterior mode
of this model. Augmentation against timbre mismatch (other recordings of the class): a random spectral tilt of
+-eq_db dB (top bin vs bottom bin, linear in log-frequency) and a random pitch shift of +-pitch_semitones
(the frame's frequency axis scaled, linear interpolation between bins) per training frame. Gain needs none:
the shape is normalised.

Not a waveform prior: it has no sigma and no log_prob over waveforms, so it is not in `priors.PRIORS` (the
Langevin separator and the ELBO cannot use it); its factory is registered as the flag family 'spectral'.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

LOG_FLOOR = 1e-3  # the encoder reads log(u * bins + LOG_FLOOR): -6.9 for an empty bin, 0 for a flat spectrum


def normalised_log_spectrum(v):
  """log(u * bins + LOG_FLOOR), u = v / sum(v): magnitude frames v [..., bins] as a gain-invariant log-shape."""
  v = tf.convert_to_tensor(v, tf.float32)
  u = v / (tf.reduce_sum(v, axis=-1, keepdims=True) + 1e-12)
  return tf.math.log(u * tf.cast(tf.shape(v)[-1], tf.float32) + LOG_FLOOR)


def gaussian_kl(mu, logvar):
  """KL(N(mu, exp(logvar)) || N(0, I)) in nats, summed over the last axis."""
  return 0.5 * tf.reduce_sum(tf.exp(logvar) + tf.square(mu) - 1.0 - logvar, axis=-1)


@keras.saving.register_keras_serializable(package="vsep_tf")
class SpectralPrior(keras.Model):
  """VAE over normalised magnitude frames [batch, bins] of one source class. See the module docstring."""

  def __init__(self, n_fft: int = 1024, hop: int = 256, latent_dim: int = 16, hidden_units: int = 512,
               concentration: float = 300.0, eq_db: float = 0.0, pitch_semitones: float = 0.0, **kwargs):
    super().__init__(**kwargs)
    self.n_fft, self.hop = int(n_fft), int(hop)
    self.bins = self.n_fft // 2 + 1
    self.latent_dim = int(latent_dim)
    self.hidden_units = int(hidden_units)
    self.concentration = float(concentration)
    self.eq_db = float(eq_db)
    self.pitch_semitones = float(pitch_semitones)
    if self.latent_dim < 1 or self.hidden_units < 1:
      raise ValueError(f"latent_dim and hidden_units must be >= 1, got {latent_dim}, {hidden_units}")
    if self.concentration <= 0 or self.eq_db < 0 or self.pitch_semitones < 0:
      raise ValueError(f"concentration must be > 0, eq_db and pitch_semitones >= 0, got {concentration}, "
                       f"{eq_db}, {pitch_semitones}")
    dense = keras.layers.Dense
    self.encoder = keras.Sequential([dense(self.hidden_units, activation="gelu"),
                                     dense(self.hidden_units, activation="gelu"),
                                     dense(2 * self.latent_dim)], name="encoder")
    self.decoder = keras.Sequential([dense(self.hidden_units, activation="gelu"),
                                     dense(self.hidden_units, activation="gelu"),
                                     dense(self.bins)], name="decoder")
    self.encoder.build((None, self.bins))
    self.decoder.build((None, self.latent_dim))
    self.built = True

  # --- the model -----------------------------------------------------------------------------------------
  def features(self, v):
    """Encoder input: the normalised log-spectrum of magnitude frames v [..., bins] (gain-invariant)."""
    return normalised_log_spectrum(v)

  def encode(self, v):
    """q(z | v): (mu, logvar), each [..., latent_dim], for magnitude frames v [..., bins]."""
    v = tf.convert_to_tensor(v, tf.float32)
    lead = tf.shape(v)[:-1]
    h = self.encoder(tf.reshape(self.features(v), [-1, self.bins]))
    mu, logvar = tf.split(h, 2, axis=-1)
    shape = tf.concat([lead, [self.latent_dim]], 0)
    return tf.reshape(mu, shape), tf.reshape(logvar, shape)

  def log_shape(self, z):
    """log softmax(f(z)): the log spectral shape [..., bins] of latents z [..., latent_dim]."""
    z = tf.convert_to_tensor(z, tf.float32)
    lead = tf.shape(z)[:-1]
    logits = self.decoder(tf.reshape(z, [-1, self.latent_dim]))
    return tf.reshape(tf.nn.log_softmax(logits, axis=-1), tf.concat([lead, [self.bins]], 0))

  def call(self, inputs, training=False):
    """Magnitude frames [batch, bins] -> their reconstruction's shape at the posterior mean [batch, bins]."""
    mu, _ = self.encode(inputs)
    return tf.exp(self.log_shape(mu))

  def tilt(self, v, seed=None):
    """Random spectral tilt of +-eq_db dB per frame (training augmentation); v [batch, bins]."""
    if self.eq_db <= 0:
      return v
    db = tf.random.uniform([tf.shape(v)[0], 1], -self.eq_db, self.eq_db, seed=seed)
    position = np.log(np.arange(1, self.bins + 1)) / np.log(self.bins)  # 0 at DC .. 1 at Nyquist
    return v * tf.pow(10.0, db * tf.constant(position[None], tf.float32) / 20.0)

  def shift_pitch(self, v, seed=None):
    """Random pitch shift of +-pitch_semitones per frame (training augmentation): v'(f) = v(f / r),
    r = 2^(u / 12), linear interpolation between bins, 0 beyond the top bin. v [batch, bins]."""
    if self.pitch_semitones <= 0:
      return v
    u = tf.random.uniform([tf.shape(v)[0], 1], -self.pitch_semitones, self.pitch_semitones, seed=seed)
    position = tf.range(self.bins, dtype=tf.float32)[None] / tf.pow(2.0, u / 12.0)  # [batch, bins]
    low = tf.cast(tf.floor(position), tf.int32)
    frac = position - tf.cast(low, tf.float32)
    padded = tf.pad(v, [[0, 0], [0, 2]])  # reads past the top bin see 0
    below = tf.gather(padded, tf.minimum(low, self.bins + 1), batch_dims=1)
    above = tf.gather(padded, tf.minimum(low + 1, self.bins + 1), batch_dims=1)
    return (1.0 - frac) * below + frac * above

  def compute_losses(self, v, training=True):
    """Negative ELBO per frame [batch] of magnitude frames v [batch, bins] (silent frames left out upstream).

    total_loss = reconstruction + kl; reconstruction = concentration * CE(u, shape); kl in nats."""
    v = tf.convert_to_tensor(v, tf.float32)
    if training:
      v = self.shift_pitch(self.tilt(v))
    u = v / (tf.reduce_sum(v, axis=-1, keepdims=True) + 1e-12)
    mu, logvar = self.encode(v)
    z = mu + tf.exp(0.5 * logvar) * tf.random.normal(tf.shape(mu)) if training else mu
    reconstruction = -self.concentration * tf.reduce_sum(u * self.log_shape(z), axis=-1)
    kl = gaussian_kl(mu, logvar)
    return {"total_loss": reconstruction + kl, "reconstruction": reconstruction, "kl": kl}

  def get_config(self):
    config = super().get_config()
    config.update(n_fft=self.n_fft, hop=self.hop, latent_dim=self.latent_dim, hidden_units=self.hidden_units,
                  concentration=self.concentration, eq_db=self.eq_db, pitch_semitones=self.pitch_semitones)
    return config


def build_spectral_prior(n_fft: int = 1024, hop: int = 256, latent_dim: int = 16, hidden_units: int = 512,
                         concentration: float = 300.0, eq_db: float = 0.0,
                         pitch_semitones: float = 0.0) -> SpectralPrior:
  """Spectral prior factory (one flag per keyword: --spectral.<name>).

  n_fft / hop: the STFT whose frames are modelled (1024 / 256 suits 16 kHz, as the NMF baseline).
  latent_dim / hidden_units: VAE size (two hidden layers each way). concentration: weight of a frame's
  likelihood against the latent prior (module docstring). eq_db / pitch_semitones: spectral-tilt (+-dB) and
  pitch-shift (+-semitones) augmentation."""
  return SpectralPrior(n_fft=n_fft, hop=hop, latent_dim=latent_dim, hidden_units=hidden_units,
                       concentration=concentration, eq_db=eq_db, pitch_semitones=pitch_semitones)
