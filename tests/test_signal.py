"""vsep_tf.signal against numpy / scipy references."""
import math

import numpy as np
import pytest
import scipy.signal
import tensorflow as tf

from vsep_tf import signal as vs

RNG = np.random.default_rng(1234)


# --------------------------------------------------------------------------------------------- mu-law


def _np_mu_law(x, mu):
  x = np.clip(x, -1, 1)
  return np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)


def _np_mu_law_inv(y, mu):
  return np.sign(y) * ((1 + mu) ** np.abs(y) - 1) / mu


@pytest.mark.parametrize("mu", [255, 15])
def test_mu_law_continuous_matches_formula_and_round_trips(mu):
  x = np.concatenate([np.linspace(-1, 1, 2001), RNG.uniform(-1, 1, 1000)]).astype(np.float32)
  y = vs.mu_law_encode(x, mu).numpy()
  np.testing.assert_allclose(y, _np_mu_law(x.astype(np.float64), mu), atol=1e-6)
  assert y.dtype == np.float32 and np.all(np.abs(y) <= 1)
  assert np.all(np.diff(vs.mu_law_encode(np.linspace(-1, 1, 2001), mu).numpy()) > 0)  # monotone
  x_back = vs.mu_law_decode(y, mu).numpy()
  np.testing.assert_allclose(x_back, x, atol=1e-6)
  np.testing.assert_allclose(vs.mu_law_decode(y, mu).numpy(), _np_mu_law_inv(y.astype(np.float64), mu),
                             atol=1e-6)


def test_mu_law_clips_out_of_range_input():
  y = vs.mu_law_encode([-3.0, 2.0, 1.0], 255).numpy()
  np.testing.assert_allclose(y, [-1.0, 1.0, 1.0], atol=1e-6)


@pytest.mark.parametrize("mu", [255, 15])
def test_mu_law_quantised(mu):
  x = np.concatenate([np.linspace(-1, 1, 20001), RNG.uniform(-1, 1, 1000), [0.0]]).astype(np.float32)
  q = vs.mu_law_encode(x, mu, quantize=True).numpy()
  q_ref = np.floor((_np_mu_law(x.astype(np.float64), mu) + 1) / 2 * mu + 0.5).astype(np.int64)
  assert q.dtype == np.int32
  # float32 vs float64 can only flip values lying on a rounding boundary: at most one level, rarely.
  assert np.max(np.abs(q - q_ref)) <= 1 and np.mean(q != q_ref) < 1e-3
  assert q.min() == 0 and q.max() == mu
  assert len(np.unique(q)) == mu + 1  # a dense grid reaches every level
  assert q[-1] == (mu + 1) // 2  # zero
  x_back = vs.mu_law_decode(q, mu, quantized=True).numpy()
  # Off by at most half a level in the companded domain: |dx| <= (1 + mu)^|y| log(1 + mu) / mu^2.
  y = np.abs(_np_mu_law(x, mu))
  bound = (1 + mu) ** np.minimum(y + 1 / mu, 1) * math.log1p(mu) / mu ** 2
  assert np.all(np.abs(x_back - x) <= bound + 1e-6)
  levels = vs.mu_law_decode(np.arange(mu + 1), mu, quantized=True).numpy()
  assert levels[0] == -1 and levels[-1] == 1 and np.all(np.diff(levels) > 0)


# --------------------------------------------------------------------------------------------- STFT


@pytest.mark.parametrize("frame_length,frame_step,fft_length", [(1024, 256, None), (512, 128, 1024),
                                                                (1000, 250, None), (255, 64, None)])
def test_stft_matches_scipy(frame_length, frame_step, fft_length):
  x = RNG.uniform(-1, 1, (2, 5003)).astype(np.float32)
  spec = vs.stft(x, frame_length, frame_step, fft_length).numpy()
  nfft = fft_length or frame_length
  _, _, ref = scipy.signal.stft(x, window="hann", nperseg=frame_length, noverlap=frame_length - frame_step,
                                nfft=nfft, boundary="zeros", padded=True)
  ref = np.swapaxes(ref, -1, -2) * scipy.signal.get_window("hann", frame_length).sum()  # undo 1/sum(w)
  assert spec.shape == ref.shape == (2, ref.shape[1], nfft // 2 + 1)
  assert spec.dtype == np.complex64
  scale = np.abs(ref).max()
  np.testing.assert_allclose(np.abs(spec), np.abs(ref), atol=1e-5 * scale)
  np.testing.assert_allclose(spec, ref, atol=1e-5 * scale)  # phase convention too


@pytest.mark.parametrize("frame_length,frame_step,fft_length,time", [
    (1024, 256, None, 16000), (1024, 512, None, 7777), (512, 128, 1024, 3001), (255, 64, None, 1000),
    (64, 16, None, 10)])
def test_istft_reconstructs_everywhere(frame_length, frame_step, fft_length, time):
  x = RNG.uniform(-1, 1, (2, 3, time)).astype(np.float32)
  spec = vs.stft(x, frame_length, frame_step, fft_length)
  y = vs.istft(spec, frame_length, frame_step, fft_length, length=time).numpy()
  assert y.shape == x.shape
  # center=True: exact at the edges too (every sample sees all its overlapping frames).
  assert np.max(np.abs(y - x)) < 1e-6
  # Without `length`: the original followed by the end padding (zeros).
  y_all = vs.istft(spec, frame_length, frame_step, fft_length).numpy()
  assert y_all.shape[-1] == (spec.shape[-2] - 1) * frame_step >= time
  np.testing.assert_allclose(y_all[..., :time], x, atol=1e-6)
  assert np.max(np.abs(y_all[..., time:]), initial=0.0) < 1e-6


def test_istft_not_centred_reconstructs_the_interior():
  frame_length, frame_step = 512, 128
  x = RNG.uniform(-1, 1, 4000).astype(np.float32)
  spec = vs.stft(x, frame_length, frame_step, center=False)
  assert spec.shape[0] == 1 + (4000 - frame_length) // frame_step
  y = vs.istft(spec, frame_length, frame_step, center=False).numpy()
  edge = frame_length - frame_step
  np.testing.assert_allclose(y[edge:-edge], x[edge:len(y) - edge], atol=1e-6)


def test_stft_in_graph_with_unknown_shapes():
  f = tf.function(lambda x: vs.istft(vs.stft(x, 256, 64), 256, 64, length=tf.shape(x)[-1]),
                  input_signature=[tf.TensorSpec([None, None], tf.float32)])
  x = RNG.uniform(-1, 1, (3, 999)).astype(np.float32)
  np.testing.assert_allclose(f(x).numpy(), x, atol=1e-6)


def test_stft_argument_checks():
  x = np.zeros(100, np.float32)
  with pytest.raises(ValueError, match="frame_step"):
    vs.stft(x, 64, 48)  # too little overlap to reconstruct with a Hann window
  with pytest.raises(ValueError, match="fft_length"):
    vs.stft(x, 64, 16, fft_length=32)


def test_magnitude_phase_helpers():
  spec = vs.stft(RNG.uniform(-1, 1, 2048).astype(np.float32), 256, 64)
  mag, phase = vs.magphase(spec)
  np.testing.assert_allclose(vs.magnitude(spec).numpy(), np.abs(spec.numpy()), rtol=1e-6)
  np.testing.assert_allclose(phase.numpy(), np.angle(spec.numpy()), atol=1e-6)
  np.testing.assert_allclose(vs.polar(mag, phase).numpy(), spec.numpy(), atol=1e-4)
  # A magnitude with a borrowed phase: |polar(m, p)| == m.
  np.testing.assert_allclose(np.abs(vs.polar(2 * mag, phase).numpy()), 2 * mag.numpy(), rtol=1e-5,
                             atol=1e-6)


# --------------------------------------------------------------------------------- frames, overlap-add


@pytest.mark.parametrize("time", [1, 100, 1024, 1025, 5000, 4096 + 3 * 768])
def test_frame_matches_numpy_slices(time):
  n, hop = 1024, 768
  x = RNG.standard_normal((2, time)).astype(np.float32)
  frames = vs.frame(x, n, hop).numpy()
  count = 1 + math.ceil(max(time - n, 0) / hop)
  assert frames.shape == (2, count, n)
  assert int(vs.num_frames(time, n, hop)) == count
  padded = np.concatenate([x, np.zeros((2, (count - 1) * hop + n - time), np.float32)], axis=-1)
  for i in range(count):
    np.testing.assert_array_equal(frames[:, i], padded[:, i * hop:i * hop + n])
  assert (count - 1) * hop < time  # no frame is all padding


@pytest.mark.parametrize("window", ["none", "chunk", "hann_positive"])
@pytest.mark.parametrize("time,n,hop", [(10000, 1024, 768), (10000, 1024, 256), (999, 1024, 512),
                                        (4096, 1024, 1024), (3000, 700, 350)])
def test_overlap_add_of_frames_reconstructs_exactly(window, time, n, hop):
  x = RNG.standard_normal((3, time)).astype(np.float32)
  w = {"none": None, "chunk": vs.chunk_weights(n, hop),
       "hann_positive": np.sin(np.pi * (np.arange(n) + 0.5) / n) ** 2}[window]
  y = vs.overlap_add(vs.frame(x, n, hop), hop, w, length=time).numpy()
  assert y.shape == x.shape
  np.testing.assert_allclose(y, x, rtol=1e-6, atol=1e-6)


def test_overlap_add_is_the_weighted_average_of_overlapping_frames():
  n, hop, count = 8, 5, 4
  frames = RNG.standard_normal((count, n)).astype(np.float32)
  w = np.array([0.1, 0.3, 0.6, 1.0, 1.0, 0.6, 0.3, 0.1], np.float32)
  y = vs.overlap_add(frames, hop, w).numpy()
  num = np.zeros((count - 1) * hop + n)
  den = np.zeros_like(num)
  for i in range(count):
    num[i * hop:i * hop + n] += w * frames[i]
    den[i * hop:i * hop + n] += w
  np.testing.assert_allclose(y, num / den, rtol=1e-5, atol=1e-6)
  # A window with zeros: samples no frame weighs come out 0, not NaN.
  y0 = vs.overlap_add(np.ones((1, 4), np.float32), 4, [0.0, 1.0, 1.0, 0.0]).numpy()
  np.testing.assert_array_equal(y0, [0.0, 1.0, 1.0, 0.0])


@pytest.mark.parametrize("n,hop", [(16, 4), (16, 8), (16, 16), (12, 5)])
@pytest.mark.parametrize("dynamic", [False, True])
def test_block_overlap_and_add_equals_tf_signal(n, hop, dynamic):
  """signal.overlap_and_add (shifted pads of blocks when hop divides N) = tf.signal.overlap_and_add, also with
  an unknown number of frames (a graph traced for any length)."""
  frames = RNG.standard_normal((2, 3, 7, n)).astype(np.float32)
  if dynamic:
    fn = tf.function(lambda f: vs.overlap_and_add(f, hop), input_signature=[tf.TensorSpec([None, None, None, n])])
    y = fn(frames)
  else:
    y = vs.overlap_and_add(frames, hop)
  np.testing.assert_allclose(y.numpy(), tf.signal.overlap_and_add(frames, hop).numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("n,hop", [(1024, 768), (1024, 512), (1024, 256), (100, 99), (64, 64)])
def test_chunk_weights_cross_fade(n, hop):
  w = vs.chunk_weights(n, hop).numpy()
  assert w.shape == (n,) and w.dtype == np.float32
  assert np.all(w > 0) and np.all(w <= 1) and w.max() > 0.999
  np.testing.assert_allclose(w, w[::-1], atol=1e-7)  # symmetric
  # Consecutive chunks cross-fade: the summed weights are constant away from the signal's ends.
  total = tf.signal.overlap_and_add(np.tile(w, (12, 1)), hop).numpy()
  interior = total[n:-n]
  np.testing.assert_allclose(interior, interior[0], rtol=1e-5)
  if 2 * (n - hop) <= n:
    np.testing.assert_allclose(interior, 1.0, rtol=1e-5)  # sin^2 + cos^2


def test_chunked_processing_has_no_seams():
  """What chunked inference does: process frames independently, cross-fade them back together."""
  n, hop, time = 2048, 1536, 20000
  x = np.sin(2 * np.pi * 440 * np.arange(time) / 16000).astype(np.float32)
  frames = vs.frame(x, n, hop)
  # A chunk-wise "model" that errs differently in every chunk: an offset alternating +-0.1.
  offsets = tf.constant(0.1 * (-1.0) ** np.arange(frames.shape[0])[:, None], tf.float32)
  y = vs.overlap_add(frames + offsets, hop, vs.chunk_weights(n, hop), length=time).numpy()
  err = y - x
  # Cross-faded: the error moves smoothly between chunks (ramps of n - hop = 512 samples), no seam.
  assert np.max(np.abs(err)) <= 0.1 + 1e-5
  assert np.max(np.abs(np.diff(err))) < 0.2 * np.pi / (2 * (n - hop)) * 1.01
  # Hard cuts (only the newest chunk counts) show steps of 0.2 at every seam.
  hard = vs.overlap_add(frames + offsets, hop, np.r_[np.zeros(n - hop), np.ones(hop)], length=time).numpy()
  assert np.max(np.abs(np.diff(hard - x))) > 0.19


def test_framing_argument_checks():
  with pytest.raises(ValueError):
    vs.frame(np.zeros(10, np.float32), 8, 9)
  with pytest.raises(ValueError):
    vs.chunk_weights(8, 0)


# --------------------------------------------------------------------------------------------- SI-SDR


def _np_si_sdr(ref, est, eps=1e-8, zero_mean=True):
  ref = ref.astype(np.float64)
  est = est.astype(np.float64)
  if zero_mean:
    ref = ref - ref.mean(-1, keepdims=True)
    est = est - est.mean(-1, keepdims=True)
  a = (ref * est).sum(-1, keepdims=True) / ((ref ** 2).sum(-1, keepdims=True) + eps)
  target = a * ref
  noise = est - target
  return 10 * np.log10(((target ** 2).sum(-1) + eps) / ((noise ** 2).sum(-1) + eps))


@pytest.mark.parametrize("zero_mean", [True, False])
def test_si_sdr_matches_numpy(zero_mean):
  ref = RNG.standard_normal((4, 3, 8000)).astype(np.float32) + 0.3
  est = (0.7 * ref + RNG.uniform(0.05, 2.0, (4, 3, 1)) * RNG.standard_normal((4, 3, 8000))).astype(np.float32)
  got = vs.si_sdr(ref, est, zero_mean=zero_mean).numpy()
  assert got.shape == (4, 3)
  np.testing.assert_allclose(got, _np_si_sdr(ref, est, zero_mean=zero_mean), atol=1e-3)


def test_si_sdr_known_values_and_invariances():
  t = np.arange(16000)
  s = np.sin(2 * np.pi * 0.01 * t).astype(np.float32)
  e = np.cos(2 * np.pi * 0.01 * t).astype(np.float32)  # orthogonal to s over whole periods
  # estimate = s + e / sqrt(10): noise power 1/10 of the signal's -> 10 dB.
  np.testing.assert_allclose(vs.si_sdr(s, s + e / np.sqrt(10)).numpy(), 10.0, atol=1e-2)
  est = s + 0.3 * e
  base = vs.si_sdr(s, est).numpy()
  np.testing.assert_allclose(vs.si_sdr(s, 5.0 * est).numpy(), base, atol=1e-3)  # scale-invariant
  np.testing.assert_allclose(vs.si_sdr(s, -0.5 * est).numpy(), base, atol=1e-3)
  assert vs.si_sdr(s, s).numpy() > 100  # perfect, still finite
  for silent in (np.zeros_like(s),):
    assert np.isfinite(vs.si_sdr(s, silent).numpy()) and np.isfinite(vs.si_sdr(silent, s).numpy())


def test_si_sdr_improvement():
  s = RNG.standard_normal(8000).astype(np.float32)
  other = RNG.standard_normal(8000).astype(np.float32)
  mix = s + other
  est = s + 0.1 * other
  got = vs.si_sdr_improvement(s, est, mix).numpy()
  np.testing.assert_allclose(got, _np_si_sdr(s, est) - _np_si_sdr(s, mix), atol=1e-3)
  assert got > 15
  np.testing.assert_allclose(vs.si_sdr_improvement(s, mix, mix).numpy(), 0.0, atol=1e-6)
