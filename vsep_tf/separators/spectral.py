r"""Separation by MAP inference under per-class spectral VAE priors (priors/spectral.py): a deep NMF.

The mixture's magnitude STFT X [frames, bins] is explained as a sum of one frame model per class,

    Y_t = sum_k exp(a_kt) softmax(f_k(z_kt)),

and the latents z and log-gains a of every class and frame are fitted jointly by the posterior mode of the
priors' own model (the frame likelihood weighted by `concentration`, as in training; Poisson/KL form, the
NMF baseline's data term):

    minimise  concentration * sum_t D_KL(X_t | Y_t) / mean_t(sum_f X_t)  +  prior_weight * sum ||z||^2 / 2

(D_KL the generalised KL divergence, summed over bins; dividing by the mean frame mass puts an average mixture
frame on the unit-mass scale the priors were trained at). `iterations` steps of Adam (written out in the
graph: the whole fit is one tf.function, batched over mixes), started from each class's encoder read on the
MIXTURE frames (init='encoder', amortised inference as the first guess) or from z = 0 (init='zero'). The gains
start at an equal share of each frame's mass; they are free (no prior: loudness is not identity).

Temporal prior (`temporal_rho` = rho > 0): a note lasts many frames, and the posterior means of a class's solo
frames are correlated from one frame to the next (lag-1 correlation 0.87-0.96 per latent on the chorale stems).
The latent prior becomes a stationary AR(1) process over each class's frames, z_t = rho z_(t-1) + sqrt(1 - rho^2)
e_t (every frame's marginal still N(0, I)), whose negative log-density replaces sum ||z||^2 / 2:

    ||z_0||^2 / 2  +  sum_(t>0) ||z_t - rho z_(t-1)||^2 / (2 (1 - rho^2))       (`latent_prior_energy`)

rho = 0 is the independent-frame prior. The amortised encoder's MAP objective uses the same term.

Estimates: power-p Wiener masks M_k = V_k^p / sum_j V_j^p on the mixture STFT (oracle.ratio_masks /
masks_to_sources, as the NMF baseline and the IRM oracle), so they add up to the mixture (as a sum; a 'mean'
mix is scaled by N first, like every mask separator here). With `phase_iterations` > 0 the masked STFTs then go
through that many rounds of MISI (masks.misi): every estimate keeps its masked magnitude |M_k X| but takes the
phase of a signal's STFT, the mixture error shared equally, and the estimates still add up to the mixture.

Amortised inference (`SpectralEncoder`, --job=spectral_encoder, training/spectral_trainer.py): one network
reads the MIXTURE's frames (with +-context_frames of context) and outputs, for every class and frame, a
Gaussian q(z_kt | X) and the class's share of the frame's mass (softmax over classes). It is trained on
training MIXES alone (the sources never reach it) by maximising the ELBO of the frozen priors' model,

    ELBO = -concentration * sum_t D_KL(X_t | Y_t(z, a)) / mean_t(sum_f X_t) - sum KL(q(z | X) || N(0, I)),

z ~ q (reparameterised). Its means and shares are then the MAP fit's starting point (init='encoder' with an
encoder present), and with iterations=0 the separation is one forward pass.

Frames are independent: long inputs are cut into chunks (`chunk_length`) with no loss but the cross-fade.

Priors compose (model_dir.load_separator(..., sources=, extra_priors=)): the fit takes any set of priors, so a mix
of a subset of the classes is separated with those priors only (their estimates add up to it), and a prior
trained on its own can be added. `encoder_sources` maps every prior to the amortised encoder's class it starts
from: the encoder's latents for those classes and their mass shares renormalised over the subset (log shares
minus their logsumexp); a prior the encoder does not know (None) starts from its own encoder with an equal
share 1 / N of every frame's mass, the known classes sharing the rest.
"""
from __future__ import annotations

from typing import Dict

import keras
import numpy as np
import tensorflow as tf

from vsep_tf import signal as signal_lib
from vsep_tf.data import mixing
from vsep_tf.layers.wavenet import WaveNet
from vsep_tf.priors.spectral import normalised_log_spectrum
from vsep_tf.separators.base import Separator, channels_batch
from vsep_tf.separators.masks import misi, ratio_masks, to_sum_mix

INITS = ("encoder", "zero")
ENCODER_ARCHS = ("conv", "wavenet")
STEREO = ("mid", "independent")
EPS = 1e-8


def spectral_search_hyperparameters(iterations: int = 300, learning_rate: float = 0.05, prior_weight: float = 1.0,
                                    mask_power: float = 2.0, init: str = "encoder", stereo: str = "mid",
                                    temporal_rho: float = 0.0, phase_iterations: int = 0) -> Dict:
  """The MAP fit's settings (flags --spectral_search.<name>; the module docstring).

  iterations / learning_rate: Adam steps on (z, a) per mix. prior_weight: weight of the latent prior
  (1: the posterior mode of the trained model). mask_power: p of the Wiener masks. init: 'encoder' or 'zero'.
  stereo: 'mid' (one fit on the channels' mean, its masks applied to every channel) or 'independent' (every
  channel fitted and masked on its own). temporal_rho: the latent prior's frame-to-frame correlation (0:
  independent frames; the module docstring). phase_iterations: rounds of MISI phase retrieval after the masks
  (masks.misi; 0: the masked mixture STFT as it is)."""
  if init not in INITS:
    raise ValueError(f"init={init!r}; choose from {INITS}")
  if stereo not in STEREO:
    raise ValueError(f"stereo={stereo!r}; choose from {STEREO}")
  if iterations < 0 or learning_rate <= 0 or prior_weight < 0 or mask_power <= 0:
    raise ValueError("iterations >= 0, learning_rate > 0, prior_weight >= 0 and mask_power > 0 required, got "
                     f"{iterations}, {learning_rate}, {prior_weight}, {mask_power}")
  if not 0.0 <= temporal_rho < 1.0:
    raise ValueError(f"temporal_rho={temporal_rho}: 0 <= rho < 1 required")
  if phase_iterations < 0:
    raise ValueError(f"phase_iterations={phase_iterations}: >= 0 required")
  return dict(iterations=int(iterations), learning_rate=float(learning_rate), prior_weight=float(prior_weight),
              mask_power=float(mask_power), init=str(init), stereo=str(stereo), temporal_rho=float(temporal_rho),
              phase_iterations=int(phase_iterations))


def latent_prior_energy(z, rho: float = 0.0):
  """Negative log-density (up to a constant) of latents z [B, N, F, d] under the latent prior, per mix [B]:
  sum ||z||^2 / 2 for independent frames (rho = 0), else the stationary AR(1) prior over the frames (axis 2)
  of the module docstring."""
  if rho == 0.0:
    return 0.5 * tf.reduce_sum(tf.square(z), axis=[1, 2, 3])
  innovations = z[:, :, 1:] - rho * z[:, :, :-1]
  return 0.5 * (tf.reduce_sum(tf.square(z[:, :, :1]), axis=[1, 2, 3])
                + tf.reduce_sum(tf.square(innovations), axis=[1, 2, 3]) / (1.0 - rho * rho))


def mixture_objective(priors, x, z, a, concentration: float):
  """(frame models V [B, N, F, bins], data term per mix [B]): V_k = exp(a_k) softmax(f_k(z_k)) for latents
  z [B, N, F, d] and log-gains a [B, N, F]; data = concentration * D_KL(X | sum_k V_k) / mean frame mass of X."""
  log_shapes = tf.stack([p.log_shape(z[:, k]) for k, p in enumerate(priors)], axis=1)
  models = tf.exp(a[..., None] + log_shapes)
  y = tf.reduce_sum(models, axis=1) + EPS
  scale = concentration / (tf.reduce_mean(tf.reduce_sum(x, axis=-1), axis=-1) + EPS)
  return models, tf.reduce_sum(x * tf.math.log((x + EPS) / y) - x + y, axis=[1, 2]) * scale


@keras.saving.register_keras_serializable(package="vsep_tf")
class SpectralEncoder(keras.Model):
  """q(z_k | X) and the classes' mass shares for every frame of a mixture (module docstring)."""

  def __init__(self, num_sources: int, bins: int, latent_dim: int, hidden_units: int = 512,
               context_frames: int = 2, arch: str = "conv", wavenet_blocks: int = 2, wavenet_layers: int = 6,
               **kwargs):
    super().__init__(**kwargs)
    self.num_sources, self.bins, self.latent_dim = int(num_sources), int(bins), int(latent_dim)
    self.hidden_units, self.context_frames = int(hidden_units), int(context_frames)
    self.arch, self.wavenet_blocks, self.wavenet_layers = str(arch), int(wavenet_blocks), int(wavenet_layers)
    outputs = self.num_sources * (2 * self.latent_dim + 1)
    if self.arch == "conv":
      self.context = keras.layers.Conv1D(self.hidden_units, 2 * self.context_frames + 1, padding="same",
                                         activation="gelu", name="context")
      self.hidden = keras.layers.Dense(self.hidden_units, activation="gelu", name="hidden")
      self.head = keras.layers.Dense(outputs, name="head")
      self.context.build((None, None, self.bins + 1))
      self.hidden.build((None, None, self.hidden_units))
      self.head.build((None, None, self.hidden_units))
    elif self.arch == "wavenet":
      # Non-causal WaveNet over the frame sequence: gated dilated convolutions (3 taps, dilations 1 .. 2^(L-1)
      # per block), receptive field 2 * blocks * (2^L - 1) + 1 frames.
      self.trunk = WaveNet(num_blocks=self.wavenet_blocks, num_layers=self.wavenet_layers,
                           residual_channels=self.hidden_units, skip_channels=self.hidden_units,
                           out_channels=outputs, kernel_size=3, causal=False, name="trunk")
      self.trunk.build((None, None, self.bins + 1))
    else:
      raise ValueError(f"arch={arch!r}; choose from {ENCODER_ARCHS}")
    self.built = True

  @property
  def receptive_field_frames(self) -> int:
    """Frames of mixture one frame's output sees."""
    return self.trunk.receptive_field if self.arch == "wavenet" else 2 * self.context_frames + 1

  def call(self, x, training=False):
    """Mixture magnitudes x [B, F, bins] -> (mu, logvar [B, N, F, d], log mass share [B, N, F])."""
    x = tf.convert_to_tensor(x, tf.float32)
    mass = tf.reduce_sum(x, axis=-1, keepdims=True)
    level = tf.math.log(mass / (tf.reduce_mean(mass, axis=1, keepdims=True) + EPS) + 1e-4)  # relative loudness
    features = tf.concat([normalised_log_spectrum(x), level], axis=-1)
    if self.arch == "wavenet":
      h = self.trunk(features)
    else:
      h = self.head(self.hidden(self.context(features)))
    b, f = tf.shape(x)[0], tf.shape(x)[1]
    h = tf.transpose(tf.reshape(h, [b, f, self.num_sources, 2 * self.latent_dim + 1]), [0, 2, 1, 3])
    mu, logvar, share = tf.split(h, [self.latent_dim, self.latent_dim, 1], axis=-1)
    return mu, tf.clip_by_value(logvar, -10.0, 4.0), tf.nn.log_softmax(share[..., 0], axis=1)

  @classmethod
  def for_priors(cls, priors: dict, **kwargs) -> "SpectralEncoder":
    """The encoder sized for these priors (number, bins, latent size); kwargs: build_spectral_encoder's."""
    first = next(iter(priors.values()))
    return cls(len(priors), first.bins, first.latent_dim, **build_spectral_encoder(**kwargs))

  def get_config(self):
    config = super().get_config()
    config.update(num_sources=self.num_sources, bins=self.bins, latent_dim=self.latent_dim,
                  hidden_units=self.hidden_units, context_frames=self.context_frames, arch=self.arch,
                  wavenet_blocks=self.wavenet_blocks, wavenet_layers=self.wavenet_layers)
    return config


def build_spectral_encoder(hidden_units: int = 512, context_frames: int = 2, arch: str = "conv",
                           wavenet_blocks: int = 2, wavenet_layers: int = 6):
  """The amortised encoder's settings (flags --spectral_encoder.<name>); the sizes of the priors fill the rest:
  SpectralEncoder(num_sources, bins, latent_dim, **build_spectral_encoder(...)).

  arch 'conv': one convolution over +-context_frames frames, then a dense layer (hidden_units wide).
  arch 'wavenet': a non-causal WaveNet stack over the frames (hidden_units residual / skip channels,
  wavenet_blocks x wavenet_layers gated blocks, 3-tap dilated convolutions; context_frames unused)."""
  if arch not in ENCODER_ARCHS:
    raise ValueError(f"arch={arch!r}; choose from {ENCODER_ARCHS}")
  if hidden_units < 1 or context_frames < 0 or wavenet_blocks < 1 or wavenet_layers < 1:
    raise ValueError("hidden_units, wavenet_blocks, wavenet_layers >= 1 and context_frames >= 0 required, got "
                     f"{hidden_units}, {wavenet_blocks}, {wavenet_layers}, {context_frames}")
  return dict(hidden_units=int(hidden_units), context_frames=int(context_frames), arch=str(arch),
              wavenet_blocks=int(wavenet_blocks), wavenet_layers=int(wavenet_layers))


class SpectralPriorSeparator(Separator):
  """MAP separation under {name: SpectralPrior} (module docstring)."""

  method = "spectral"

  def __init__(self, priors: dict, sample_rate: int, mix: str, iterations: int = 300, learning_rate: float = 0.05,
               prior_weight: float = 1.0, mask_power: float = 2.0, init: str = "encoder", stereo: str = "mid",
               temporal_rho: float = 0.0, phase_iterations: int = 0, chunk_length: int = 2 ** 18,
               encoder: "SpectralEncoder" = None,
               encoder_sources=None):
    self.priors = dict(priors)
    if not self.priors:
      raise ValueError("no priors")
    self.source_names = tuple(self.priors)
    self.sample_rate = int(sample_rate)
    self.mix = mixing.check_mix(mix)
    self.settings = spectral_search_hyperparameters(iterations, learning_rate, prior_weight, mask_power, init,
                                                    stereo, temporal_rho, phase_iterations)
    first = next(iter(self.priors.values()))
    for name, prior in self.priors.items():
      if (prior.n_fft, prior.hop, prior.concentration) != (first.n_fft, first.hop, first.concentration):
        raise ValueError(f"prior {name!r} has a different STFT or concentration from {self.source_names[0]!r}")
    self.n_fft, self.hop, self.concentration = first.n_fft, first.hop, first.concentration
    self.encoder = encoder  # amortised q(z | X) (--job=spectral_encoder) or None: the priors' own encoders
    self.encoder_sources = self._check_encoder_sources(encoder, encoder_sources)
    self.chunk_length = int(chunk_length)
    self.chunk_overlap = self.chunk_length // 16
    # One trace for every batch size and length (a stream's last, smaller batch reuses it). No AutoGraph: the
    # graph's only loop is an explicit tf.while_loop and every Python branch is on static settings, and
    # converting the networks' code doubled the first call (band: 3.7 s -> 1.6 s).
    self._fn = tf.function(self._separate, input_signature=[tf.TensorSpec([None, None], tf.float32)],
                           autograph=False)
    self._channels_fn = tf.function(self._separate_channels, autograph=False,
                                    input_signature=[tf.TensorSpec([None, None, None], tf.float32)])

  # ------------------------------------------------------------- subsets of the encoder's classes (compose)
  def _check_encoder_sources(self, encoder, encoder_sources):
    """encoder_sources: for every prior (in order) the index of the amortised encoder's class it starts from,
    or None (a prior the encoder was not trained for: it starts from its own encoder, like init='encoder'
    without an amortised encoder). Default: the encoder's classes in order, one per prior. A subset of the
    encoder's classes (a mix of fewer classes than it was trained on) takes their latents and their mass
    shares renormalised over the subset; added priors get an equal share 1 / N of every frame's mass."""
    if encoder is None:
      if encoder_sources is not None:
        raise ValueError("encoder_sources needs an amortised encoder")
      return None
    if encoder_sources is None:
      if encoder.num_sources != len(self.priors):
        raise ValueError(f"the encoder has {encoder.num_sources} sources, the priors {len(self.priors)}")
      return tuple(range(len(self.priors)))
    index = tuple(None if i is None else int(i) for i in encoder_sources)
    used = [i for i in index if i is not None]
    if len(index) != len(self.priors):
      raise ValueError(f"encoder_sources has {len(index)} entries, the priors {len(self.priors)}")
    if not used or len(set(used)) != len(used) or not all(0 <= i < encoder.num_sources for i in used):
      raise ValueError(f"encoder_sources={index}: distinct indices of the encoder's {encoder.num_sources} "
                       "classes (None: a prior it does not know), at least one, required")
    return index

  def _encoder_subset(self) -> bool:
    """True if the priors are not exactly the amortised encoder's classes in its order."""
    return self.encoder is not None and self.encoder_sources != tuple(range(self.encoder.num_sources))

  def _encoder_init(self, x, mass, priors):
    """(z [B, N, F, d], log-gains a [B, N, F]) from the amortised encoder for the subset encoder_sources."""
    z_all, _, log_share_all = self.encoder(x)
    if not self._encoder_subset():
      return z_all, log_share_all + tf.math.log(mass + EPS)[:, None]  # the encoder's own classes, unchanged
    n, known = len(priors), [i for i in self.encoder_sources if i is not None]
    log_share = tf.gather(log_share_all, known, axis=1)
    log_share = log_share - tf.reduce_logsumexp(log_share, axis=1, keepdims=True)  # renormalised over the subset
    log_share += tf.math.log(len(known) / n)  # priors the encoder does not know get 1 / N of the mass each
    zs, shares, j = [], [], 0
    for k, i in enumerate(self.encoder_sources):
      if i is None:
        zs.append(priors[k].encode(x)[0])
        shares.append(tf.fill(tf.shape(mass), tf.math.log(1.0 / n)))
      else:
        zs.append(z_all[:, i])
        shares.append(log_share[:, j])
        j += 1
    return tf.stack(zs, axis=1), tf.stack(shares, axis=1) + tf.math.log(mass + EPS)[:, None]

  # ------------------------------------------------------------------------------------------------ core
  def initial_latents(self, x):
    """The fit's start for magnitude spectrograms x [B, F, bins]: (z [B, N, F, d], log-gains a [B, N, F]) from
    the amortised encoder (init='encoder' with one), the priors' own encoders, or z = 0 (equal gains)."""
    mass = tf.reduce_sum(x, axis=-1)                                           # [B, F]
    priors = list(self.priors.values())
    n = len(priors)
    if self.settings["init"] == "encoder" and self.encoder is not None:
      return self._encoder_init(x, mass, priors)
    a = tf.tile(tf.math.log(mass / n + EPS)[:, None], [1, n, 1])               # [B, N, F]
    if self.settings["init"] == "encoder":
      z = tf.stack([p.encode(x)[0] for p in priors], axis=1)                  # [B, N, F, d]
    else:
      z = tf.zeros(tf.concat([tf.shape(x)[:1], [n], tf.shape(x)[1:2], [priors[0].latent_dim]], 0))
    return z, a

  def source_models(self, magnitude):
    """The fitted frame models V_k = exp(a_k) softmax(f_k(z_k)) of magnitude spectrograms [batch, frames,
    bins]: float32 [batch, N, frames, bins]."""
    s = self.settings
    x = tf.convert_to_tensor(magnitude, tf.float32)
    priors = list(self.priors.values())
    z, a = self.initial_latents(x)
    if s["iterations"] == 0:  # one pass: the encoder's guess as it is (no gradient graph to build)
      return mixture_objective(priors, x, z, a, self.concentration)[0]

    def loss(z, a):
      _, data = mixture_objective(priors, x, z, a, self.concentration)
      return tf.reduce_sum(data) + s["prior_weight"] * tf.reduce_sum(latent_prior_energy(z, s["temporal_rho"]))

    b1, b2, lr = 0.9, 0.999, s["learning_rate"]

    def body(i, z, a, mz, vz, ma, va):
      with tf.GradientTape() as tape:
        tape.watch([z, a])
        value = loss(z, a)
      gz, ga = tape.gradient(value, [z, a])
      t = tf.cast(i + 1, tf.float32)
      correction = lr * tf.sqrt(1.0 - b2 ** t) / (1.0 - b1 ** t)
      mz, vz = b1 * mz + (1 - b1) * gz, b2 * vz + (1 - b2) * tf.square(gz)
      ma, va = b1 * ma + (1 - b1) * ga, b2 * va + (1 - b2) * tf.square(ga)
      z = z - correction * mz / (tf.sqrt(vz) + 1e-8)
      a = a - correction * ma / (tf.sqrt(va) + 1e-8)
      return i + 1, z, a, mz, vz, ma, va

    zeros = lambda v: tf.zeros_like(v)  # pylint: disable=unnecessary-lambda-assignment
    _, z, a, *_ = tf.while_loop(lambda i, *_: i < s["iterations"], body,
                                (tf.constant(0), z, a, zeros(z), zeros(z), zeros(a), zeros(a)))
    return mixture_objective(priors, x, z, a, self.concentration)[0]

  def _separate(self, mix):
    length = tf.shape(mix)[-1]
    spec = signal_lib.stft(to_sum_mix(mix, self.mix, self.num_sources), self.n_fft, self.hop)  # [B, F, bins]
    masks = ratio_masks(self.source_models(tf.abs(spec)), self.settings["mask_power"])
    return self._estimates(masks, spec, mix, length)

  def _estimates(self, masks, spec, mix, length):
    """Masks [..., N, F, bins] on the sum-mix STFT spec -> sources [..., N, T] (MISI rounds if set)."""
    return misi(masks, spec, to_sum_mix(mix, self.mix, self.num_sources), self.n_fft, self.hop, length,
                self.settings["phase_iterations"])

  def _separate_channels(self, mix):
    """mix [B, C, T] -> [B, C, N, T]: the fit on the mid channel (the channels' mean, what the priors and the
    encoder were trained on), its masks applied to every channel's STFT (each channel's estimates add up to
    that channel)."""
    length = tf.shape(mix)[-1]
    spec = signal_lib.stft(to_sum_mix(mix, self.mix, self.num_sources), self.n_fft, self.hop)  # [B, C, F, bins]
    masks = ratio_masks(self.source_models(tf.abs(tf.reduce_mean(spec, axis=1))), self.settings["mask_power"])
    return self._estimates(masks[:, None], spec, mix, length)

  def separate_channels_graph(self, mix):
    """separate_channels inside a graph (an export's stereo signature): float32 tensor [B, C, T] -> [B, C, N, T]."""
    if self.settings["stereo"] == "mid":
      return self._separate_channels(mix)
    shape = tf.shape(mix)
    sources = self._separate(tf.reshape(mix, [-1, shape[2]]))
    return tf.reshape(sources, [shape[0], shape[1], self.num_sources, shape[2]])

  def separate_channels(self, mix):
    """mix [batch, channels, time] -> [batch, channels, N, time] (stereo setting 'mid' or 'independent')."""
    mix = channels_batch(mix)
    if mix.shape[1] == 1 or self.settings["stereo"] == "independent":
      return super().separate_channels(mix)
    return self._channels_fn(tf.convert_to_tensor(mix)).numpy()

  def separate(self, mix) -> tf.Tensor:
    """mix [batch, time] -> [batch, N, time] float32."""
    mix = tf.convert_to_tensor(mix, tf.float32)
    if mix.shape.rank != 2:
      raise ValueError(f"separate takes [batch, time], got shape {mix.shape}")
    # Traced inline into a caller's graph (an export): no nested function call for the converters to freeze.
    return self._separate(mix) if tf.inside_function() else self._fn(mix)

  def describe(self) -> dict:
    return {**super().describe(), "n_fft": self.n_fft, "hop": self.hop, "concentration": self.concentration,
            "amortised_encoder": self.encoder is not None,
            **({"encoder_sources": list(self.encoder_sources)} if self._encoder_subset() else {}),
            **self.settings}
