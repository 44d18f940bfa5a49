r"""Feasibility check for the toy by the spectral route: harmonic-comb frame priors with pitch as a latent, and an
amortised pitch encoder trained on mixes of the priors' own samples (a sleep phase in the STFT domain).

  python -m tools.harmonic_check --steps=1000 --num_examples=10 --output_json=docs/results/toy_harmonic_check.json

RESEARCH, NOT A SEPARATOR. The per-class "priors" here are IDEALISED: each toy class's frame is a comb of Hann-window
responses at the harmonics of a pitch (folded at Nyquist) with the class's exact Fourier-series amplitudes (sine 1;
square 4/(pi h), odd h; sawtooth 2/(pi h); triangle 8/(pi h)^2, odd h), pitch uniform in piano keys 0.1 .. 64.9.
Nothing is learnt from solo audio; the question is only whether such priors plus an amortised search can reach the
toy target (>= 15 dB median SI-SDR per class at a 4096 / 1024 STFT), i.e. whether building them is worth it.

1. Ceiling: the combs at the TRUE pitches (and amplitudes), Wiener masks (power 2).
2. Pitch encoder: the mixture's normalised log-spectrum read at m x f for every pitch f of a 1/`resolution`-semitone
   grid and m in MULTIPLES (a harmonic stack, as in deep-salience pitch trackers), four 1-D convolutions over the
   grid, one softmax over the grid per class. Trained by cross-entropy on mixes of the priors' samples: random
   pitch, amplitude and harmonic phases per class, rendered as complex STFT frames and summed (the sources and the
   toy generator are never read). Read out: argmax and a parabola through its neighbours' logits.
3. Gains: KL-NMF multiplicative updates on the combs at the encoder's pitches; then, with --fit_steps, Adam on
   log-pitch and log-gains under the generalised KL (the band widened from 1 kHz to Nyquist over 3/4 of the steps).
Scored on held-out toy mixes (--toy_seed, default 1234) with SI-SDR per class.
"""
from __future__ import annotations

import json
import math
import time

from absl import app, flags

flags.DEFINE_integer("steps", 1000, "Training steps of the pitch encoder (batches of --batch_size mixes).")
flags.DEFINE_integer("batch_size", 128, "Synthetic mixes per step.")
flags.DEFINE_integer("resolution", 8, "Pitch grid points per semitone.")
flags.DEFINE_integer("harmonics", 300, "Harmonics per comb (folded at Nyquist).")
flags.DEFINE_integer("fit_steps", 0, "Adam steps on log-pitch and log-gains after the encoder (0: none).")
flags.DEFINE_integer("num_examples", 10, "Held-out toy items.")
flags.DEFINE_integer("length", 0, "Samples per item (0: the recipe's 48,000).")
flags.DEFINE_integer("toy_seed", 1234, "Toy data seed of the held-out items.")
flags.DEFINE_integer("seed", 0, "Seed of the synthetic mixes and the encoder's init.")
flags.DEFINE_integer("n_fft", 4096, "STFT size.")
flags.DEFINE_integer("hop", 1024, "STFT hop.")
flags.DEFINE_float("mask_power", 2.0, "Wiener mask power.")
flags.DEFINE_string("encoder_weights", None, "Keras weights file: loaded if it exists (no training), else saved after training.")
flags.DEFINE_string("output_json", None, "Where the results go (JSON).")
FLAGS = flags.FLAGS

SAMPLE_RATE = 14700
KEY_RANGE = (0.0, 66.0)             # the pitch grid, piano keys (the toy draws keys in 0.1 .. 64.9)
MULTIPLES = (0.5, 1, 2, 3, 4, 5, 6, 7, 8)
TAPS = 4                            # window-response taps each side of a harmonic
CLASSES = ("sine", "square", "sawtooth", "triangle")


def fourier_amplitudes(name: str, harmonics: int):
  """The toy class's magnitude Fourier series, harmonics 1 .. H (unit amplitude)."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  h = np.arange(1, harmonics + 1, dtype=np.float64)
  series = {"sine": (h == 1) * 1.0, "square": (h % 2 == 1) * 4 / math.pi / h, "sawtooth": 2 / math.pi / h,
            "triangle": (h % 2 == 1) * 8 / math.pi ** 2 / h ** 2}
  return series[name].astype(np.float32)


def main(argv):
  del argv
  import numpy as np  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from vsep_tf import signal as signal_lib  # pylint: disable=import-outside-toplevel
  from vsep_tf.data.toy import TOY_ITEM_LENGTH, ToyData  # pylint: disable=import-outside-toplevel
  from vsep_tf.priors.harmonic import window_response  # pylint: disable=import-outside-toplevel
  from vsep_tf.data.toy import frequency_to_key, key_to_frequency  # pylint: disable=import-outside-toplevel
  from vsep_tf.separators.masks import masks_to_sources, ratio_masks  # pylint: disable=import-outside-toplevel

  tf.random.set_seed(FLAGS.seed)
  N_FFT, HOP = FLAGS.n_fft, FLAGS.hop  # pylint: disable=invalid-name
  BINS = N_FFT // 2 + 1  # pylint: disable=invalid-name
  n, num_h, res = len(CLASSES), FLAGS.harmonics, FLAGS.resolution
  grid_size = int((KEY_RANGE[1] - KEY_RANGE[0]) * res)
  profiles = tf.constant(np.stack([fourier_amplitudes(c, num_h) for c in CLASSES]))   # [N, H]

  def comb(hz, amps, phases=None):
    """STFT frames [R, BINS] of combs at pitches hz [R] with harmonic amplitudes amps [R, H]: magnitudes added
    (phases None: the frame model) or complex with harmonic phases [R, H] (a sample)."""
    rows = tf.shape(hz)[0]
    f = hz[:, None] * tf.range(1, num_h + 1, dtype=tf.float32)[None]
    f = tf.math.floormod(f, float(SAMPLE_RATE))
    pos = tf.where(f > SAMPLE_RATE / 2, SAMPLE_RATE - f, f) * N_FFT / SAMPLE_RATE
    taps = tf.floor(pos)[..., None] + tf.range(-TAPS + 1, TAPS + 1, dtype=tf.float32)
    d = taps - pos[..., None]
    value = amps[..., None] * window_response(d)
    taps = tf.abs(taps)
    taps = tf.where(taps > BINS - 1, 2 * (BINS - 1) - taps, taps)          # the real spectrum's mirror images
    ids = tf.reshape(tf.cast(taps, tf.int32) + tf.range(rows)[:, None, None] * BINS, [-1])

    def scatter(v):
      return tf.reshape(tf.math.unsorted_segment_sum(tf.reshape(v, [-1]), ids, rows * BINS), [rows, BINS])
    if phases is None:
      return scatter(tf.abs(value))
    phase = phases[..., None] - math.pi * d                                # a centred frame's linear phase
    return tf.complex(scatter(value * tf.cos(phase)), scatter(value * tf.sin(phase)))

  def shapes(hz):
    """Unit-mass frame models [N, F, BINS] of the classes at pitches hz [N, F]."""
    out = []
    for k in range(n):
      v = comb(hz[k], tf.tile(profiles[k][None], [tf.shape(hz)[1], 1]))
      out.append(v / tf.reduce_sum(v, -1, keepdims=True))
    return tf.stack(out)

  def features(x):
    u = x / (tf.reduce_sum(x, -1, keepdims=True) + 1e-8)
    return tf.math.log(u * BINS + 1e-3)

  grid_hz = key_to_frequency(KEY_RANGE[0] + np.arange(grid_size) / res)
  pos = np.stack([np.clip(grid_hz * m * N_FFT / SAMPLE_RATE, 0, BINS - 1.001) for m in MULTIPLES], -1)
  low, frac = tf.constant(np.floor(pos).astype(np.int32)), tf.constant((pos - np.floor(pos)).astype(np.float32))

  def harmonic_stack(feat):
    """[B, BINS] -> [B, grid, multiples]: the log-spectrum read at m x every grid pitch."""
    return tf.gather(feat, low, axis=1) * (1 - frac) + tf.gather(feat, low + 1, axis=1) * frac

  inputs = tf.keras.Input([grid_size, len(MULTIPLES)])
  h = inputs
  for width in (9, 9, 25, 9):
    h = tf.keras.layers.Conv1D(64, width, padding="same", activation="gelu")(h)
  encoder = tf.keras.Model(inputs, tf.keras.layers.Permute([2, 1])(tf.keras.layers.Conv1D(n, 1)(h)))
  optimizer = tf.keras.optimizers.Adam(1e-3)

  @tf.function
  def train_step():
    keys = tf.random.uniform([FLAGS.batch_size, n], 0.1, 64.9)
    gains = tf.random.uniform([FLAGS.batch_size, n], 0.8, 1.0)
    mix = tf.add_n([comb(key_to_frequency(keys[:, k]), gains[:, k:k + 1] * profiles[k][None],
                         tf.random.uniform([FLAGS.batch_size, num_h], 0, 2 * math.pi)) for k in range(n)])
    label = tf.clip_by_value(tf.cast(tf.round((keys - KEY_RANGE[0]) * res), tf.int32), 0, grid_size - 1)
    with tf.GradientTape() as tape:
      logits = encoder(harmonic_stack(features(tf.abs(mix))))
      loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(label, logits))
    optimizer.apply_gradients(zip(tape.gradient(loss, encoder.trainable_variables), encoder.trainable_variables))
    return loss

  t0 = time.time()
  import os  # pylint: disable=import-outside-toplevel
  loaded = bool(FLAGS.encoder_weights) and os.path.exists(FLAGS.encoder_weights)
  if loaded:
    encoder.load_weights(FLAGS.encoder_weights)
  for step in range(0 if loaded else FLAGS.steps):
    loss = train_step()
    if step % 100 == 0 or step == FLAGS.steps - 1:
      print(f"step {step}: cross-entropy {float(loss):.3f} ({time.time() - t0:.0f} s)", flush=True)
  train_seconds = time.time() - t0
  if FLAGS.encoder_weights and not loaded:
    encoder.save_weights(FLAGS.encoder_weights)

  def encoder_keys(x):
    """Pitch per class and frame [N, F] (keys): the argmax of the encoder's logits, refined by a parabola."""
    lg = np.transpose(encoder(harmonic_stack(features(x))).numpy(), [1, 0, 2])   # [N, F, grid]
    top = np.clip(lg.argmax(-1), 1, grid_size - 2)[..., None]
    l0, l1, l2 = (np.take_along_axis(lg, top + o, -1)[..., 0] for o in (-1, 0, 1))
    offset = np.clip(0.5 * (l0 - l2) / np.minimum(l0 - 2 * l1 + l2, -1e-9), -0.5, 0.5)
    return (KEY_RANGE[0] + (top[..., 0] + offset) / res).astype(np.float32)

  def kl_nmf_gains(x, w, iterations=50):
    g = tf.ones([n, x.shape[0], 1]) * tf.reduce_sum(x, -1)[None, :, None] / n
    for _ in range(iterations):
      y = tf.reduce_sum(g * w, 0) + 1e-8
      g = g * tf.reduce_sum(w * (x / y)[None], -1, keepdims=True) / (tf.reduce_sum(w, -1, keepdims=True) + 1e-8)
    return g

  def fit(x, keys):
    log_hz = tf.Variable(np.log(key_to_frequency(keys)).astype(np.float32))
    log_g = tf.Variable(tf.math.log(kl_nmf_gains(x, shapes(tf.exp(log_hz))) + 1e-6))
    opt = tf.keras.optimizers.Adam(2e-4)
    scale = 1.0 / tf.reduce_mean(tf.reduce_sum(x, -1))
    bin_hz = tf.range(BINS, dtype=tf.float32) * SAMPLE_RATE / N_FFT

    @tf.function
    def step(cutoff):
      with tf.GradientTape() as tape:
        y = tf.reduce_sum(tf.exp(log_g) * shapes(tf.exp(log_hz)), 0) + 1e-8
        band = tf.cast(bin_hz < cutoff, tf.float32)
        loss = scale * tf.reduce_sum(band * (x * tf.math.log((x + 1e-8) / y) - x + y))
      opt.apply_gradients(zip(tape.gradient(loss, [log_hz, log_g]), [log_hz, log_g]))
    for i in range(FLAGS.fit_steps):
      step(tf.constant(1000.0 * (SAMPLE_RATE / 2000.0) ** min(1.0, i / (0.75 * FLAGS.fit_steps)), tf.float32))
    return frequency_to_key(np.exp(log_hz.numpy())).astype(np.float32)

  def refine(x, keys, sweeps=2, span=0.06, points=41):
    """Coordinate-wise local grid search of each class's pitch per frame (least squares on magnitudes, the
    other classes fixed at their KL-NMF gains; the closed-form gain of the candidate)."""
    keys = keys.copy()
    offsets = np.linspace(-span, span, points).astype(np.float32)
    frames = x.shape[0]
    for _ in range(sweeps):
      for k in range(n):
        w = shapes(tf.constant(key_to_frequency(keys), tf.float32))
        g = kl_nmf_gains(x, w)
        others = tf.reduce_sum(g * w, 0) - g[k] * w[k]
        e = x - others                                                          # [F, B]
        cand = (keys[k][None] + offsets[:, None]).reshape(-1)                   # [P * F]
        v = comb(tf.constant(key_to_frequency(cand), tf.float32), tf.tile(profiles[k][None], [len(cand), 1]))
        v = tf.reshape(v, [points, frames, BINS])
        dot = tf.reduce_sum(v * e[None], -1)
        gain = tf.reduce_sum(v * v, -1)
        objective = tf.where(dot > 0, dot * dot / gain, tf.zeros_like(dot)).numpy()   # [P, F]
        keys[k] = keys[k] + offsets[objective.argmax(0)]
    return keys

  data = ToyData(seed=FLAGS.toy_seed, item_length=FLAGS.length or TOY_ITEM_LENGTH)
  scale = n if data.mix == "mean" else 1
  rows = {"oracle_pitch": [], "encoder": [], "pitch_error_semitones": []}
  if FLAGS.fit_steps:
    rows["encoder_fit"] = []
  for i, (name, mix, sources) in enumerate(data.tracks("test", limit=FLAGS.num_examples)):
    truth = data.parameters("test", [i])
    spec = signal_lib.stft(tf.constant(mix[None] * scale), N_FFT, HOP)
    x = tf.abs(spec)[0]
    frames = x.shape[0]

    def score(keys):
      """SI-SDR per class of the Wiener masks of the combs at pitches keys [N, F] (gains by KL-NMF)."""
      w = shapes(tf.constant(key_to_frequency(keys), tf.float32))
      g = kl_nmf_gains(x, w)
      est = masks_to_sources(ratio_masks((g * w)[None], FLAGS.mask_power), spec, N_FFT, HOP, mix.shape[-1])[0].numpy() / scale
      return [float(signal_lib.si_sdr(sources[k], est[k])) for k in range(n)]

    true_keys = np.repeat(truth["key"][0][:, None], frames, 1).astype(np.float32)
    rows["oracle_pitch"].append(score(true_keys))
    keys = encoder_keys(x)
    rows["pitch_error_semitones"].append(np.median(np.abs(keys - true_keys), 1).tolist())
    rows["encoder"].append(score(keys))
    rows.setdefault("encoder_item_median", []).append(score(np.repeat(np.median(keys, 1, keepdims=True), frames, 1)))
    padded = np.pad(keys, ((0, 0), (2, 2)), mode="edge")
    filt = np.median(np.lib.stride_tricks.sliding_window_view(padded, 5, axis=1), -1)
    rows.setdefault("encoder_medfilt5", []).append(score(filt))
    ref = refine(x, filt)
    rows.setdefault("medfilt5_refine", []).append(score(ref))
    rows.setdefault("refine_error", []).append(np.median(np.abs(ref - true_keys), 1).tolist())
    if FLAGS.fit_steps:
      rows["encoder_fit"].append(score(fit(x, keys)))
    print(name, {k: np.round(v[-1], 2).tolist() for k, v in rows.items()}, flush=True)

  medians = {k: dict(zip(CLASSES, np.round(np.median(v, 0), 2).tolist())) for k, v in rows.items()}
  for k, v in medians.items():
    print(f"median {k}: {v}")
  result = {"classes": list(CLASSES), "median": medians, "per_item": rows, "train_seconds": train_seconds,
            "flags": {f: FLAGS[f].value for f in ("steps", "batch_size", "resolution", "harmonics", "fit_steps",
                                                   "num_examples", "length", "toy_seed", "seed")},
            "stft": {"n_fft": N_FFT, "hop": HOP, "sample_rate": SAMPLE_RATE}}
  if FLAGS.output_json:
    with open(FLAGS.output_json, "w", encoding="utf-8") as f:
      json.dump(result, f, indent=1)


if __name__ == "__main__":
  app.run(main)
