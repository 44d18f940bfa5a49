"""vsep_tf.audio: file I/O, validation, resampling, and the tf.data backends (tensorflow-io and fallback).

Tests marked `tfio` exercise the tensorflow-io backend: they skip where tfio_available() is False, and fail
instead when VSEP_REQUIRE_TFIO=1 (the .ci/tfio_lane.sh lane, whose purpose is to run them).
"""
import logging
import math
import os
from pathlib import Path
import stat

import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

from vsep_tf import audio
from vsep_tf.audio import AudioError

from conftest import CHORALES, require_chorales

RNG = np.random.default_rng(7)


@pytest.fixture
def require_tfio():
  if audio.tfio_available():
    return
  if os.environ.get("VSEP_REQUIRE_TFIO") == "1":
    pytest.fail("VSEP_REQUIRE_TFIO=1 but tensorflow-io is not usable here")
  pytest.skip("tensorflow-io is not usable here (tested in the .ci/tfio_lane.sh lane)")


def tfio_test(f):
  return pytest.mark.tfio(pytest.mark.usefixtures("require_tfio")(f))


def tone(freq, rate, seconds, amp=0.5, phase=0.0):
  t = np.arange(int(round(seconds * rate))) / rate
  return (amp * np.sin(2 * np.pi * freq * t + phase)).astype(np.float32)


def fit_tone(x, freq, rate):
  """Least-squares amplitude of a sinusoid at `freq` in x, and the residual RMS."""
  t = np.arange(len(x)) / rate
  basis = np.stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t)], axis=1)
  coef, *_ = np.linalg.lstsq(basis, x.astype(np.float64), rcond=None)
  return float(np.hypot(*coef)), float(np.sqrt(np.mean((x - basis @ coef) ** 2)))


def peak_frequency(x, rate):
  """Frequency of the largest spectral peak, refined by parabolic interpolation of the log magnitude."""
  n = len(x)
  spec = np.abs(np.fft.rfft(x * np.hanning(n), 8 * n)) + 1e-12
  k = int(np.argmax(spec))
  a, b, c = np.log(spec[k - 1:k + 2])
  return (k + 0.5 * (a - c) / (a - 2 * b + c)) * rate / (8 * n)


def band_limited(rate_lo, n, rate, seed):
  """Sum of sines below 0.7 of the Nyquist frequency of rate_lo, with smooth fades at both ends."""
  rng = np.random.default_rng(seed)
  t = np.arange(n) / rate
  x = sum(a * np.sin(2 * np.pi * f * t + p) for a, f, p in zip(
      rng.uniform(0.1, 0.2, 5), rng.uniform(50, 0.35 * rate_lo, 5), rng.uniform(0, 2 * np.pi, 5)))
  edge = np.minimum(np.arange(n), np.arange(n)[::-1]) / (0.1 * n)
  return (x * np.sin(0.5 * np.pi * np.minimum(edge, 1)) ** 2).astype(np.float32)


def listing(directory):
  return sorted(os.listdir(directory))


# ------------------------------------------------------------------------------------- round trips

LSB = {"PCM_16": 2.0**-15, "PCM_24": 2.0**-23, "FLOAT": 0.0}
FORMATS = [("wav", "PCM_16"), ("wav", "PCM_24"), ("wav", "FLOAT"), ("flac", "PCM_16"), ("flac", "PCM_24")]


@pytest.mark.parametrize("ext,subtype", FORMATS)
@pytest.mark.parametrize("channels", [1, 2])
def test_round_trip(tmp_path, ext, subtype, channels):
  x = RNG.uniform(-0.99, 0.99, (3000, channels)).astype(np.float32)
  path = tmp_path / f"a.{ext}"
  audio.write_audio(path, x if channels > 1 else x[:, 0], 22050, subtype=subtype)
  info = sf.info(str(path))
  assert (info.format, info.subtype) == (ext.upper(), subtype)  # format from the extension
  assert audio.audio_info(path) == (3000, 22050, channels)
  y, rate = audio.read_audio(path, mono=False)
  assert rate == 22050 and y.dtype == np.float32 and y.shape == (3000, channels)
  assert np.max(np.abs(y - x)) <= LSB[subtype] * 1.0001  # within one quantisation step
  if subtype == "FLOAT":
    np.testing.assert_array_equal(y, x)


def test_channel_policy(tmp_path):
  left, right = tone(440, 8000, 0.5), tone(660, 8000, 0.5, amp=0.25)
  stereo = tmp_path / "stereo.wav"
  audio.write_audio(stereo, np.stack([left, right], axis=1), 8000, subtype="FLOAT")
  mono, _ = audio.read_audio(stereo)
  assert mono.shape == left.shape
  np.testing.assert_allclose(mono, (left + right) / 2, atol=1e-7)  # explicit downmix: the mean
  both, _ = audio.read_audio(stereo, mono=False)
  assert both.shape == (len(left), 2)
  single = tmp_path / "mono.wav"
  audio.write_audio(single, left, 8000, subtype="FLOAT")
  assert audio.read_audio(single)[0].shape == (len(left),)
  assert audio.read_audio(single, mono=False)[0].shape == (len(left), 1)


# -------------------------------------------------------------------------------------- resampling


def test_resample_keeps_frequency_and_amplitude():
  x = tone(1000, 44100, 1.0, amp=0.5, phase=0.3)
  y = audio.resample(x, 44100, 16000)
  assert y.dtype == np.float32 and len(y) == 16000
  assert abs(peak_frequency(y, 16000) - 1000.0) < 0.5
  amp, resid = fit_tone(y[200:-200], 1000, 16000)
  assert abs(amp - 0.5) < 0.5 * 0.005 and resid < 1e-3
  # Aligned (no delay): the phase is the input's.
  np.testing.assert_allclose(y[200:-200], tone(1000, 16000, 1.0, 0.5, 0.3)[200:-200], atol=2e-3)


@pytest.mark.parametrize("freq", [8500, 10000, 15000])
def test_resample_rejects_what_would_alias(freq):
  """Tones above the new Nyquist (8 kHz) would fold down to 16000 - f: they must be > 40 dB down."""
  y = audio.resample(tone(freq, 44100, 1.0, amp=0.5), 44100, 16000)
  rms = np.sqrt(np.mean(y[500:-500] ** 2))
  assert 20 * np.log10(rms / (0.5 / np.sqrt(2))) < -40


def test_resample_shapes_and_identity():
  x = RNG.standard_normal((1001, 3)).astype(np.float32)
  assert audio.resample(x, 16000, 16000) is not None
  np.testing.assert_array_equal(audio.resample(x, 16000, 16000), x)
  assert audio.resample(x, 44100, 16000).shape == (math.ceil(1001 * 160 / 441), 3)
  assert audio.resample(x, 8000, 16000).shape == (2002, 3)
  with pytest.raises(ValueError, match="positive integer"):
    audio.resample(x, 0, 16000)
  with pytest.raises(ValueError, match="positive integer"):
    audio.resample(x, 16000, 16000.5)


def test_read_audio_resamples(tmp_path):
  path = tmp_path / "tone.flac"
  audio.write_audio(path, tone(1000, 44100, 1.0), 44100, subtype="PCM_24")
  y, rate = audio.read_audio(path, sample_rate=16000)
  assert rate == 16000 and y.shape == (16000,)
  assert abs(peak_frequency(y, 16000) - 1000) < 0.5
  np.testing.assert_allclose(y, audio.resample(audio.read_audio(path)[0], 44100, 16000), atol=1e-7)


# ---------------------------------------------------------------------------------------- excerpts


def test_excerpt_reading(tmp_path):
  x = RNG.uniform(-0.9, 0.9, (10000, 2)).astype(np.float32)
  for ext, subtype in [("flac", "PCM_16"), ("wav", "FLOAT")]:
    path = tmp_path / f"long.{ext}"
    audio.write_audio(path, x, 16000, subtype=subtype)
    full, _ = audio.read_audio(path, mono=False)
    part, rate = audio.read_audio(path, mono=False, start=4321, frames=1000)
    assert rate == 16000
    np.testing.assert_array_equal(part, full[4321:5321])
    tail, _ = audio.read_audio(path, mono=False, start=9500, frames=1000)  # runs past the end: truncated
    np.testing.assert_array_equal(tail, full[9500:])
    np.testing.assert_array_equal(audio.read_audio(path, start=9000)[0], full[9000:].mean(axis=1))
    with pytest.raises(AudioError, match="past the end"):
      audio.read_audio(path, start=10000)
    with pytest.raises(ValueError):
      audio.read_audio(path, frames=0)
    with pytest.raises(ValueError):
      audio.read_audio(path, start=-1)


def test_excerpt_does_not_read_the_rest(tmp_path):
  """A NaN outside the excerpt goes unnoticed: only the excerpt was read."""
  x = np.zeros(20000, np.float32)
  x[15000] = np.nan
  path = tmp_path / "nan_late.wav"
  sf.write(str(path), x, 16000, subtype="FLOAT")
  part, _ = audio.read_audio(path, start=1000, frames=5000)
  assert part.shape == (5000,)
  with pytest.raises(AudioError, match="first at frame 15000"):
    audio.read_audio(path, start=10000)


# -------------------------------------------------------------------------------------- bad inputs


def make_bad_files(d):
  d = Path(d)
  files = {}
  files["missing"] = d / "missing.wav"
  files["text"] = d / "notes.wav"
  files["text"].write_text("this is not audio\n" * 50)
  files["empty"] = d / "empty.wav"
  files["empty"].write_bytes(b"")
  files["zero_frames"] = d / "zero.wav"
  sf.write(str(files["zero_frames"]), np.zeros((0, 1), np.float32), 16000)
  nan = np.zeros(1000, np.float32)
  nan[123] = np.nan
  files["nan"] = d / "nan.wav"
  sf.write(str(files["nan"]), nan, 16000, subtype="FLOAT")
  inf = np.zeros((1000, 2), np.float32)
  inf[7, 1] = -np.inf
  files["inf"] = d / "inf.wav"
  sf.write(str(files["inf"]), inf, 16000, subtype="FLOAT")
  files["too_long"] = d / "long.flac"
  long = np.zeros(3 * 8000, np.float32)
  long[100] = np.nan  # never read: max_seconds is checked from the header first
  sf.write(str(files["too_long"]), np.nan_to_num(long), 8000)
  files["too_long_nan"] = d / "long_nan.wav"
  sf.write(str(files["too_long_nan"]), long, 8000, subtype="FLOAT")
  files["directory"] = d / "folder.wav"
  files["directory"].mkdir()
  return files


BAD = {
    "missing": "no such file",
    "text": "not a readable audio file",
    "empty": "empty file",
    "zero_frames": "no audio frames",
    "nan": "non-finite samples",
    "inf": "non-finite samples",
    "too_long": "more than max_seconds=2",
    "too_long_nan": "more than max_seconds=2",
    "directory": "is a directory",
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_inputs_raise_audio_error(tmp_path, kind):
  path = make_bad_files(tmp_path)[kind]
  with pytest.raises(AudioError, match=BAD[kind]) as err:
    audio.read_audio(path, max_seconds=2)
  assert str(path) in str(err.value) and err.value.path == str(path)
  assert isinstance(err.value, ValueError)
  if kind in ("missing", "text", "empty", "zero_frames", "directory"):
    with pytest.raises(AudioError, match=BAD[kind]):
      audio.audio_info(path)


def test_non_finite_message_says_where(tmp_path):
  path = make_bad_files(tmp_path)["inf"]
  with pytest.raises(AudioError, match=r"1 non-finite samples \(NaN/Inf\), the first at frame 7"):
    audio.read_audio(path)


def test_max_seconds_allows_files_up_to_the_limit(tmp_path):
  path = tmp_path / "two.wav"
  audio.write_audio(path, np.zeros(2 * 8000, np.float32), 8000)
  assert audio.read_audio(path, max_seconds=2)[0].shape == (16000,)
  with pytest.raises(AudioError, match="2.00 s long"):
    audio.read_audio(path, max_seconds=1.99)


# ------------------------------------------------------------------------------------------ writing


def test_write_refuses_to_clobber_and_overwrites_on_request(tmp_path):
  path = tmp_path / "out.wav"
  audio.write_audio(path, np.full(100, 0.25, np.float32), 8000)
  before = path.read_bytes()
  with pytest.raises(FileExistsError, match="overwrite=True"):
    audio.write_audio(path, np.full(200, -0.5, np.float32), 8000)
  assert path.read_bytes() == before
  assert listing(tmp_path) == ["out.wav"]  # no temporary file left behind
  os.chmod(path, 0o640)
  audio.write_audio(path, np.full(200, -0.5, np.float32), 8000, overwrite=True)
  y, _ = audio.read_audio(path)
  assert y.shape == (200,) and np.all(y == -0.5)
  assert stat.S_IMODE(os.stat(path).st_mode) == 0o640  # the replaced file's mode is kept
  assert listing(tmp_path) == ["out.wav"]


def test_write_new_file_gets_ordinary_permissions(tmp_path):
  path = tmp_path / "new.flac"
  audio.write_audio(path, np.zeros(10, np.float32), 8000)
  assert stat.S_IMODE(os.stat(path).st_mode) == 0o644  # not mkstemp's 0600


def test_failed_write_leaves_nothing(tmp_path):
  # FLAC holds at most 8 channels: soundfile fails after the temporary file was made.
  with pytest.raises(AudioError, match="cannot write 9 channel"):
    audio.write_audio(tmp_path / "nine.flac", np.zeros((100, 9), np.float32), 8000)
  # An existing file survives a failed overwrite untouched.
  keep = tmp_path / "keep.flac"
  audio.write_audio(keep, np.full(50, 0.5, np.float32), 8000)
  before = keep.read_bytes()
  with pytest.raises(AudioError):
    audio.write_audio(keep, np.zeros((100, 9), np.float32), 8000, overwrite=True)
  assert keep.read_bytes() == before
  assert listing(tmp_path) == ["keep.flac"]


def test_write_refuses_bad_input(tmp_path):
  x = np.zeros(100, np.float32)
  bad = x.copy()
  bad[3] = np.nan
  with pytest.raises(AudioError, match="non-finite"):
    audio.write_audio(tmp_path / "nan.wav", bad, 8000)
  with pytest.raises(AudioError, match="non-finite"):
    audio.write_audio(tmp_path / "inf.wav", np.full(5, np.inf), 8000, subtype="FLOAT")
  with pytest.raises(ValueError, match="extension"):
    audio.write_audio(tmp_path / "x.mp3", x, 8000)
  with pytest.raises(ValueError, match="FLAC"):
    audio.write_audio(tmp_path / "x.flac", x, 8000, subtype="FLOAT")
  with pytest.raises(ValueError, match="subtype"):
    audio.write_audio(tmp_path / "x.wav", x, 8000, subtype="PCM_8")
  with pytest.raises(ValueError, match=r"\[channels, time\]"):
    audio.write_audio(tmp_path / "x.wav", np.zeros((2, 16000), np.float32), 8000)
  with pytest.raises(AudioError, match="empty"):
    audio.write_audio(tmp_path / "x.wav", np.zeros(0, np.float32), 8000)
  with pytest.raises(ValueError, match="floating point"):
    audio.write_audio(tmp_path / "x.wav", np.full(10, 1000, np.int16), 8000)
  assert listing(tmp_path) == []


def test_write_clips_integer_formats_with_a_warning(tmp_path, caplog):
  x = np.array([0.0, 1.5, -2.0, 0.5], np.float32)
  with caplog.at_level(logging.WARNING):
    audio.write_audio(tmp_path / "loud.wav", x, 8000, subtype="PCM_16")
  assert any("clipping 2 samples" in r.getMessage() for r in caplog.records)
  y, _ = audio.read_audio(tmp_path / "loud.wav")
  np.testing.assert_allclose(y, [0.0, 1.0, -1.0, 0.5], atol=2**-15)
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    audio.write_audio(tmp_path / "loud_float.wav", x, 8000, subtype="FLOAT")  # floats keep |x| > 1
  assert not any("clipping" in r.getMessage() for r in caplog.records)
  np.testing.assert_array_equal(audio.read_audio(tmp_path / "loud_float.wav")[0], x)


# ------------------------------------------------------------------ tf.data: the fallback backend


def test_io_backend_is_decided_by_the_probe():
  assert audio.io_backend() == ("tensorflow-io" if audio.tfio_available() else "soundfile")
  assert audio.tfio_available() is audio.tfio_available()  # cached: one probe


def test_decode_fallback_matches_read_audio_in_a_pipeline(tmp_path):
  paths = []
  for i, (ext, subtype) in enumerate(FORMATS):
    paths.append(str(tmp_path / f"f{i}.{ext}"))
    audio.write_audio(paths[-1], RNG.uniform(-0.9, 0.9, (4000 + 100 * i, 2)), 22050, subtype=subtype)
  ds = tf.data.Dataset.from_tensor_slices(paths).map(
      lambda p: audio.decode_audio_tf(p, sample_rate=16000, backend="soundfile"))
  for path, (x, rate) in zip(paths, ds):
    assert int(rate) == 16000 and x.shape.rank == 1
    np.testing.assert_array_equal(x.numpy(), audio.read_audio(path, sample_rate=16000)[0])
  # Stereo, native rate, an excerpt given as tensors.
  x, rate = audio.decode_audio_tf(paths[0], mono=False, start=tf.constant(100), frames=tf.constant(500),
                                  backend="soundfile")
  assert int(rate) == 22050
  np.testing.assert_array_equal(x.numpy(), audio.read_audio(paths[0], mono=False)[0][100:600])


@pytest.mark.parametrize("kind", ["missing", "text", "empty", "zero_frames", "nan", "too_long"])
def test_decode_fallback_errors_name_the_file(tmp_path, kind):
  path = str(make_bad_files(tmp_path)[kind])
  decode = tf.function(lambda p: audio.decode_audio_tf(p, max_seconds=2, backend="soundfile"))
  with pytest.raises(tf.errors.InvalidArgumentError, match=BAD[kind]) as err:
    decode(tf.constant(path))
  assert path in str(err.value)


def test_resample_tf_fallback_matches_resample():
  x = RNG.standard_normal((3000, 2)).astype(np.float32)
  y = audio.resample_tf(x, 44100, 16000, backend="soundfile")
  assert y.shape.as_list() == [math.ceil(3000 * 160 / 441), 2]
  np.testing.assert_array_equal(y.numpy(), audio.resample(x, 44100, 16000))
  f = tf.function(lambda v, r: audio.resample_tf(v, r, 16000, backend="soundfile"))
  np.testing.assert_array_equal(f(x[:, 0], tf.constant(22050)).numpy(), audio.resample(x[:, 0], 22050, 16000))
  np.testing.assert_array_equal(f(x[:, 0], tf.constant(16000)).numpy(), x[:, 0])


def test_backend_argument_checks():
  with pytest.raises(ValueError, match="backend"):
    audio.resample_tf(np.zeros(10, np.float32), 8000, 16000, backend="sox")
  if not audio.tfio_available():
    with pytest.raises(RuntimeError, match="not usable"):
      audio.resample_tf(np.zeros(10, np.float32), 8000, 16000, backend="tensorflow-io")


# ------------------------------------------------------------------ tf.data: tensorflow-io backend


@tfio_test
@pytest.mark.parametrize("ext,subtype", FORMATS)
def test_tfio_decode_is_bit_identical(tmp_path, ext, subtype):
  path = str(tmp_path / f"a.{ext}")
  audio.write_audio(path, RNG.uniform(-0.99, 0.99, (3000, 2)), 22050, subtype=subtype)
  for kwargs in [dict(mono=False), dict(mono=True), dict(mono=False, start=1234, frames=500),
                 dict(mono=False, start=2900, frames=500)]:
    x, rate = audio.decode_audio_tf(path, backend="tensorflow-io", **kwargs)
    ref, ref_rate = audio.decode_audio_tf(path, backend="soundfile", **kwargs)
    assert int(rate) == int(ref_rate) == 22050
    np.testing.assert_array_equal(x.numpy(), ref.numpy())


@tfio_test
@pytest.mark.parametrize("orig,new", [(44100, 16000), (22050, 16000), (48000, 16000), (8000, 16000),
                                      (16000, 44100), (44100, 48000), (16000, 16000)])
def test_tfio_resample_matches_fallback(orig, new):
  x = band_limited(min(orig, new), 4000, orig, seed=orig + new)
  stereo = np.stack([x, -0.5 * x], axis=1)
  y = audio.resample_tf(stereo, orig, new, backend="tensorflow-io").numpy()
  ref = audio.resample(stereo, orig, new)
  assert y.shape == ref.shape == (math.ceil(4000 * new / orig), 2)
  assert np.max(np.abs(y - ref)) < audio.RESAMPLE_PARITY_ATOL


@tfio_test
def test_tfio_resample_keeps_tone_and_rejects_aliases():
  y = audio.resample_tf(tone(1000, 44100, 1.0, amp=0.5), 44100, 16000, backend="tensorflow-io").numpy()
  assert len(y) == 16000 and abs(peak_frequency(y, 16000) - 1000) < 0.5
  amp, _ = fit_tone(y[200:-200], 1000, 16000)
  assert abs(amp - 0.5) < 0.5 * 0.01
  hi = audio.resample_tf(tone(10000, 44100, 1.0, amp=0.5), 44100, 16000, backend="tensorflow-io").numpy()
  assert 20 * np.log10(np.sqrt(np.mean(hi[500:-500] ** 2)) / (0.5 / np.sqrt(2))) < -40


@tfio_test
def test_tfio_pipeline_with_mixed_file_rates(tmp_path):
  """The file's rate is only known in-graph: the resampler's alignment must be computed there."""
  paths, refs = [], []
  for rate in (44100, 22050, 16000, 8000):
    paths.append(str(tmp_path / f"r{rate}.flac"))
    audio.write_audio(paths[-1], band_limited(8000, rate // 4, rate, seed=rate), rate, subtype="PCM_24")
    refs.append(audio.read_audio(paths[-1], sample_rate=16000)[0])
  ds = tf.data.Dataset.from_tensor_slices(paths).map(
      lambda p: audio.decode_audio_tf(p, sample_rate=16000, backend="tensorflow-io"))
  for (x, rate), ref in zip(ds, refs):
    assert int(rate) == 16000 and x.shape == ref.shape
    assert np.max(np.abs(x.numpy() - ref)) < audio.RESAMPLE_PARITY_ATOL


@tfio_test
@pytest.mark.parametrize("kind", ["missing", "text", "zero_frames", "nan", "inf", "too_long", "too_long_nan"])
def test_tfio_errors_name_the_file(tmp_path, kind):
  path = str(make_bad_files(tmp_path)[kind])
  decode = tf.function(lambda p: audio.decode_audio_tf(p, max_seconds=2, backend="tensorflow-io"))
  with pytest.raises(tf.errors.OpError) as err:
    decode(tf.constant(path))
  assert path in str(err.value)
  if kind == "too_long_nan":  # the header check comes before the samples are read
    assert "max_seconds" in str(err.value)


@tfio_test
def test_tfio_empty_file_raises(tmp_path):
  path = str(make_bad_files(tmp_path)["empty"])
  with pytest.raises(tf.errors.OpError):
    audio.decode_audio_tf(path, backend="tensorflow-io")


@tfio_test
def test_tfio_is_the_default_backend_when_available(tmp_path):
  assert audio.io_backend() == "tensorflow-io"
  path = str(tmp_path / "a.wav")
  audio.write_audio(path, tone(440, 16000, 0.1), 16000)
  x, _ = audio.decode_audio_tf(path)
  np.testing.assert_array_equal(x.numpy(), audio.read_audio(path)[0])


# -------------------------------------------------------------------------------------- real data


def test_chorale_violin_stems_read_at_16k_mono():
  stems = sorted(require_chorales(CHORALES / "train").glob("*/violin.flac"))
  assert stems, "no violin stems in the train split"
  for path in stems[:3]:
    frames, rate, channels = audio.audio_info(path)
    assert (rate, channels) == (16000, 1) and frames > 16000
    x, rate = audio.read_audio(path, sample_rate=16000, mono=True, start=frames // 2, frames=16000)
    assert rate == 16000 and x.shape == (16000,) and x.dtype == np.float32
    assert np.all(np.isfinite(x)) and np.max(np.abs(x)) <= 1.0
    assert np.sqrt(np.mean(x**2)) > 1e-3  # a violin plays mid-chorale
    y, r = audio.decode_audio_tf(str(path), sample_rate=16000, start=frames // 2, frames=16000)
    assert int(r) == 16000
    np.testing.assert_array_equal(y.numpy(), x)
