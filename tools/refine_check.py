r"""Research check: can a few LEARNED refinement steps after the amortised encoder close the gap between the
one pass and the MAP fit? (Iterative amortised inference: Marino, Yue & Mandt, ICML 2018; semi-amortised VAEs:
Kim et al., ICML 2018.)

A spectral_encoder model's encoder gives (z, a) for every class and frame of a mixture (separators/spectral.py).
The fit then takes 300 Adam steps on the MAP objective; here each of --steps refinement networks (a non-causal
WaveNet over the frames, the project's Keras layers, last layer zero-initialised so training starts at the
encoder's answer) reads the mixture's frame features, the current (z, log-share) and the objective's gradient
with respect to them, and outputs an update:

    (z, a) <- (z, a) + R_i(features(X), z, a - log mass, g(grad_z), g(grad_a)),   g(u) = sign(u) log(1 + |u|)

--inputs=residual replaces the gradient in z (autodiff through the decoders: ops the TFLite converter refuses) by
the mixture's residual log((X + e) / (Y + e)) per bin, Y the current mixture model; the gradient in a is written
out (gain_gradient).

The networks learn on training MIXES alone (the model's own training tracks, its --valid_tracks held out) by the
MAP objective after the last step, the priors and the encoder frozen: the same unsupervised objective as the
encoder's `--encoder_objective=map`. The separation is still one graph of fixed cost (the encoder, then --steps
gradient evaluations and networks), no iterative optimiser.

  python -m tools.refine_check --model_dir=runs/chv4 --output_dir=runs/chv4_refine2 --steps=2 \
      --train_steps=1000 --split=valid --output_json=runs/refine2_valid.json
"""
from __future__ import annotations

import os
import sys
import time

import keras
import tensorflow as tf
from absl import app, flags

from vsep_tf import evaluate as evaluate_lib
from vsep_tf import registry
from vsep_tf import signal as signal_lib
from vsep_tf.layers.tracking import get_layer_list, set_layer_list
from vsep_tf.layers.wavenet import WaveNet
from vsep_tf.model_dir import load_config, load_separator
from vsep_tf.priors.spectral import normalised_log_spectrum
from vsep_tf.separators.masks import to_sum_mix
from vsep_tf.separators.spectral import (EPS, SpectralPriorSeparator, latent_prior_energy,
                                         mixture_objective)


INPUTS = ("gradient", "residual")


def signed_log(u):
  return tf.sign(u) * tf.math.log1p(tf.abs(u))


def gain_gradient(priors, x, z, a, concentration: float):
  """(mixture model Y [B, F, bins], the data term's gradient in the log-gains a [B, N, F]) without autodiff:
  d/da_k of scale * sum_f (X log(X / Y) - X + Y) is scale * sum_f V_k (1 - X / Y) (mixture_objective)."""
  models, _ = mixture_objective(priors, x, z, a, concentration)
  y = tf.reduce_sum(models, axis=1) + EPS
  scale = concentration / (tf.reduce_mean(tf.reduce_sum(x, axis=-1), axis=-1) + EPS)
  return y, scale[:, None, None] * tf.reduce_sum(models * (1.0 - x / y)[:, None], axis=-1)


class LearnedRefiner(keras.Model):
  """`steps` refinement networks over the frame sequence (module docstring)."""

  def __init__(self, num_sources: int, bins: int, latent_dim: int, steps: int = 2, hidden_units: int = 128,
               wavenet_blocks: int = 1, wavenet_layers: int = 6, inputs: str = "gradient", **kwargs):
    super().__init__(**kwargs)
    if inputs not in INPUTS:
      raise ValueError(f"inputs={inputs!r}; choose from {INPUTS}")
    self.num_sources, self.bins, self.latent_dim, self.steps = num_sources, bins, latent_dim, steps
    self.inputs = inputs
    width = bins + 1 + num_sources * (latent_dim + 2) + (num_sources * latent_dim if inputs == "gradient" else bins)
    # Attributes refine_0, refine_1, ... (vsep_tf.layers.tracking: a list attribute is not checkpointed).
    set_layer_list(self, "refine", [
        WaveNet(num_blocks=wavenet_blocks, num_layers=wavenet_layers, residual_channels=hidden_units,
                skip_channels=hidden_units, out_channels=num_sources * (latent_dim + 1), kernel_size=3,
                causal=False, zero_init_output=True, name=f"refine_{i}") for i in range(steps)])
    for net in self.nets:
      net.build((None, None, width))
    self.built = True

  @property
  def nets(self):
    return get_layer_list(self, "refine")

  def refine(self, priors, x, z, a, concentration: float, prior_weight: float, rho: float = 0.0):
    """(z [B, N, F, d], a [B, N, F]) after the refinement steps, for magnitudes x [B, F, bins]."""
    mass = tf.reduce_sum(x, axis=-1)
    log_mass = tf.math.log(mass + EPS)
    level = tf.math.log(mass / (tf.reduce_mean(mass, axis=1, keepdims=True) + EPS) + 1e-4)
    features = tf.concat([normalised_log_spectrum(x), level[..., None]], axis=-1)        # [B, F, bins + 1]
    b, f = tf.shape(x)[0], tf.shape(x)[1]
    n, d = self.num_sources, self.latent_dim

    def frames(t):  # [B, N, F, k] -> [B, F, N * k]
      return tf.reshape(tf.transpose(t, [0, 2, 1, 3]), [b, f, n * t.shape[-1]])

    for net in self.nets:
      share = a - log_mass[:, None]
      if self.inputs == "gradient":
        with tf.GradientTape() as tape:
          tape.watch([z, a])
          _, data = mixture_objective(priors, x, z, a, concentration)
          loss = tf.reduce_sum(data) + prior_weight * tf.reduce_sum(latent_prior_energy(z, rho))
        gz, ga = tape.gradient(loss, [z, a])
        specific = frames(signed_log(gz))
      else:  # no autodiff: the mixture's residual per bin and the data term's gradient in a, written out
        y, ga = gain_gradient(priors, x, z, a, concentration)
        floor = 1e-3 * tf.reduce_mean(x, axis=[1, 2], keepdims=True) + EPS
        specific = tf.math.log((x + floor) / (y + floor))
      inputs = tf.concat([features, frames(z), specific, frames(share[..., None]),
                          frames(signed_log(ga)[..., None])], axis=-1)
      delta = tf.transpose(tf.reshape(net(inputs), [b, f, n, d + 1]), [0, 2, 1, 3])
      z, a = z + delta[..., :d], a + delta[..., d]
    return z, a


class RefinedSeparator(SpectralPriorSeparator):
  """A spectral_encoder separator whose start (the encoder's answer) goes through a LearnedRefiner; with
  iterations=0 that is the separation, else the MAP fit starts there."""

  method = "spectral_refined"

  def __init__(self, base: SpectralPriorSeparator, refiner: LearnedRefiner):
    if base.encoder is None:
      raise ValueError("the refiner follows an amortised encoder (a spectral_encoder model)")
    self.refiner = refiner
    super().__init__(base.priors, base.sample_rate, base.mix, chunk_length=base.chunk_length,
                     encoder=base.encoder, **base.settings)

  def initial_latents(self, x):
    z, a = super().initial_latents(x)
    s = self.settings
    return self.refiner.refine(list(self.priors.values()), x, z, a, self.concentration, s["prior_weight"],
                               s["temporal_rho"])


def map_objective(base: SpectralPriorSeparator, x, z, a):
  """The MAP fit's objective per mix [B] of base's priors and settings at (z, a), magnitudes x [B, F, bins]."""
  s = base.settings
  _, data = mixture_objective(list(base.priors.values()), x, z, a, base.concentration)
  return data + s["prior_weight"] * latent_prior_energy(z, s["temporal_rho"])


def train_refiner(base: SpectralPriorSeparator, data, steps: int, train_steps: int, batch_size: int,
                  crop_length: int, learning_rate: float, hidden_units: int, seed: int, log_every: int = 50,
                  inputs: str = "gradient"):
  """(LearnedRefiner, history [(objective refined, objective at the encoder's answer)] per step): a refiner
  after base's amortised encoder (frozen, as its priors), trained on data's 'train' mixes (a data set object:
  its held-out tracks stay out) by base's MAP objective after the last step, averaged over the batch."""
  priors = list(base.priors.values())
  refiner = LearnedRefiner(len(priors), priors[0].bins, priors[0].latent_dim, steps, hidden_units, inputs=inputs)
  ds = data.mixtures("train", length=crop_length, batch_size=batch_size, seed=seed)
  optimizer = keras.optimizers.Adam(learning_rate)
  s, n = base.settings, len(priors)

  @tf.function
  def step(mix):
    x = tf.abs(signal_lib.stft(to_sum_mix(mix, data.mix, n), base.n_fft, base.hop))
    z0, a0 = base.initial_latents(x)
    z0, a0 = tf.stop_gradient(z0), tf.stop_gradient(a0)
    with tf.GradientTape() as tape:
      z, a = refiner.refine(priors, x, z0, a0, base.concentration, s["prior_weight"], s["temporal_rho"])
      loss = tf.reduce_mean(map_objective(base, x, z, a))
    grads = tape.gradient(loss, refiner.trainable_variables)
    grads, _ = tf.clip_by_global_norm(grads, 10.0)
    optimizer.apply_gradients(zip(grads, refiner.trainable_variables))
    return loss, tf.reduce_mean(map_objective(base, x, z0, a0))

  t0, it, history = time.time(), iter(ds), []
  for i in range(train_steps):
    history.append(tuple(float(v) for v in step(next(it)["mix"])))
    if log_every and (i % log_every == 0 or i == train_steps - 1):
      print(f"step {i}: objective {history[-1][0]:.1f} (encoder alone {history[-1][1]:.1f}), "
            f"{time.time() - t0:.0f} s", flush=True)
  return refiner, history


def checkpoint_path(output_dir: str) -> str:
  return os.path.join(output_dir, "refiner")


def define_flags(fv: flags.FlagValues):
  evaluate_lib.define_data_flags(fv)
  flags.DEFINE_string("model_dir", None, "A spectral_encoder model directory.", flag_values=fv)
  flags.DEFINE_string("output_dir", None, "Where the refiner's weights go (or come from with --train_steps=0).",
                      flag_values=fv)
  flags.DEFINE_integer("steps", 2, "Learned refinement steps.", flag_values=fv)
  flags.DEFINE_enum("inputs", "gradient", list(INPUTS), "What each step reads besides the mixture and the current "
                    "latents: the MAP objective's gradient, or the mixture's residual per bin (no autodiff).",
                    flag_values=fv)
  flags.DEFINE_integer("hidden_units", 128, "Channels of every refinement WaveNet.", flag_values=fv)
  flags.DEFINE_integer("train_steps", 1000, "Training steps (0: restore from --output_dir).", flag_values=fv)
  flags.DEFINE_integer("train_batch_size", 8, "Training mixes per step.", flag_values=fv)
  flags.DEFINE_integer("crop_length", 65536, "Samples per training mix.", flag_values=fv)
  flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate.", flag_values=fv)
  flags.DEFINE_integer("seed", 0, "Training mixes' seed.", flag_values=fv)
  flags.DEFINE_list("model_override", [], "'--name=value' settings of the separator (e.g. the fit's iterations, "
                    "MISI rounds).", flag_values=fv)
  flags.DEFINE_string("output_json", None, "Write the results here.", flag_values=fv)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  fv = flags.FLAGS
  try:
    if not fv.model_dir or not fv.output_dir:
      raise ValueError("--model_dir and --output_dir required")
    base = load_separator(fv.model_dir, ["--spectral_search.iterations=0"] + list(fv.model_override))
    priors = list(base.priors.values())
    opts = evaluate_lib.options_from_flags(fv, fv.model_dir)
    if fv.train_steps > 0:
      # A training run's own data settings (its gain augmentation, its held-out tracks), as its encoder saw them;
      # a shipped model keeps none: the evaluation data set's train split.
      cfg = load_config(fv.model_dir)
      data = (registry.dataset_from_config(cfg) if cfg.get("data_root") else evaluate_lib.build_dataset(opts))
      refiner, _ = train_refiner(base, data, fv.steps, fv.train_steps, fv.train_batch_size, fv.crop_length,
                                 fv.learning_rate, fv.hidden_units, fv.seed, inputs=fv.inputs)
      print(f"refiner: {refiner.count_params()} parameters, {fv.steps} steps")
      os.makedirs(fv.output_dir, exist_ok=True)
      tf.train.Checkpoint(refiner=refiner).write(checkpoint_path(fv.output_dir))
    else:
      if not tf.io.gfile.exists(checkpoint_path(fv.output_dir) + ".index"):
        raise FileNotFoundError(f"no refiner in {fv.output_dir} (train one with --train_steps > 0)")
      refiner = LearnedRefiner(len(priors), priors[0].bins, priors[0].latent_dim, fv.steps, fv.hidden_units,
                               inputs=fv.inputs)
      tf.train.Checkpoint(refiner=refiner).read(checkpoint_path(fv.output_dir)).assert_consumed()
    separator = RefinedSeparator(base, refiner)
    result = evaluate_lib.evaluate(opts, separator=separator)
  except (ValueError, FileNotFoundError) as e:
    print(f"tools.refine_check: error: {e}", file=sys.stderr)
    return 1
  result["refiner"] = dict(model_dir=fv.model_dir, steps=fv.steps, inputs=fv.inputs, hidden_units=fv.hidden_units,
                           train_steps=fv.train_steps, model_override=list(fv.model_override))
  evaluate_lib.report(result, fv.output_json)
  return 0


if __name__ == "__main__":
  define_flags(flags.FLAGS)
  app.run(main)
