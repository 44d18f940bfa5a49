"""Chunked / streamed separation, the user API (any rate, any channels) and the `python -m vsep_tf.separate` CLI.

The model is a tiny supervised encoder made by the real trainer (conftest.tiny_supervised_dir): a non-causal
WaveNet with a receptive field of 15 samples, far below the cross-fade, so chunked separation must reproduce
separation of the whole signal.
"""
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

from vsep_tf import audio
from vsep_tf import inference
from vsep_tf.separators import load_separator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHUNK, OVERLAP = 4096, 1024
HOP = CHUNK - OVERLAP


@pytest.fixture(scope="module")
def separator(tiny_supervised_dir):
  return load_separator(tiny_supervised_dir)


def _noise(n, channels=None, seed=0):
  rng = np.random.RandomState(seed)
  shape = [n] if channels is None else [n, channels]
  return (0.3 * rng.randn(*shape)).astype(np.float32)


def _files(root):
  """Every file under root (relative paths), hidden temporaries included."""
  return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


# ------------------------------------------------------------------------------------------ chunking
def test_chunked_equals_whole_where_the_model_is_local(separator):
  assert separator.encoder.receptive_field < OVERLAP
  x = _noise(CHUNK + 5 * HOP)  # the last chunk ends exactly at the end: no padded chunk
  whole = separator.separate(x[None]).numpy()[0]
  chunked = separator.separate_long(x, chunk_length=CHUNK, overlap=OVERLAP, batch_size=2)
  assert chunked.shape == whole.shape == (4, x.shape[0])
  np.testing.assert_allclose(chunked, whole, atol=1e-5)
  # A zero-padded last chunk sees zeros past the end instead of the per-layer 'same' padding of one pass:
  # equal except within a receptive field of the end.
  y = _noise(CHUNK + 5 * HOP + 1000, seed=1)
  whole = separator.separate(y[None]).numpy()[0]
  chunked = separator.separate_long(y, chunk_length=CHUNK, overlap=OVERLAP)
  rf = separator.encoder.receptive_field
  np.testing.assert_allclose(chunked[:, :-rf], whole[:, :-rf], atol=1e-5)


def test_no_seams_on_a_long_sine(separator):
  rate = separator.sample_rate
  t = np.arange(12 * HOP + CHUNK) / rate
  x = (0.8 * np.sin(2 * np.pi * 220.0 * t)).astype(np.float32)
  est = separator.separate_long(x, chunk_length=CHUNK, overlap=OVERLAP)
  diff = np.abs(np.diff(est, axis=1))  # [N, T - 1]
  borders = np.zeros(diff.shape[1], bool)
  for s in range(0, x.shape[0] - CHUNK + 1, HOP):
    for b in (s, s + CHUNK):  # where a chunk starts and where one ends
      borders[max(b - 16, 0):b + 16] = True
  borders[:64] = borders[-64:] = False  # the signal's own ends are not seams
  assert borders.sum() > 300
  near = diff[:, borders].max(axis=1)
  elsewhere = diff[:, ~borders].max(axis=1)
  assert np.all(near <= elsewhere * 1.001 + 1e-6), (near, elsewhere)


def test_stream_equals_separate_long_per_channel(separator):
  x = _noise(CHUNK + 4 * HOP + 777, channels=2, seed=2)
  rng = np.random.RandomState(0)
  cuts = np.cumsum(rng.randint(1, 5000, size=40))
  blocks = np.split(x, cuts[cuts < x.shape[0]])
  streamed = list(separator.separate_stream(iter(blocks), x.shape[0], CHUNK, OVERLAP, batch_size=4))
  assert len(streamed) > 1  # yielded as it goes, not at the end
  out = np.concatenate(streamed, axis=1)
  for c in range(2):
    ref = separator.separate_long(x[:, c], chunk_length=CHUNK, overlap=OVERLAP)
    np.testing.assert_allclose(out[..., c], ref, atol=1e-6)
  mono = np.concatenate(list(separator.separate_stream([x[:, 0]], x.shape[0], CHUNK, OVERLAP)), axis=1)
  np.testing.assert_array_equal(mono, separator.separate_long(x[:, 0], CHUNK, OVERLAP))


@pytest.mark.parametrize("rates", [(16000, 14700), (44100, 14700), (14700, 44100), (8000, 8000)])
def test_stream_resampler_equals_resample(rates):
  x = _noise(30000, channels=2, seed=3)
  rng = np.random.RandomState(1)
  r = audio.StreamResampler(*rates)
  outs, i = [], 0
  while i < x.shape[0]:
    n = int(rng.randint(1, 6000))
    outs.append(r.push(x[i:i + n]))
    i += n
  outs.append(r.flush())
  y = np.concatenate(outs)
  ref = audio.resample(x, *rates)
  assert y.shape == ref.shape == (audio.resampled_length(30000, *rates), 2)
  np.testing.assert_allclose(y, ref, atol=1e-6)


def test_iter_audio_blocks_equals_read_audio(tmp_path):
  path = str(tmp_path / "a.flac")
  audio.write_audio(path, 0.5 * _noise(20000, channels=2), 16000, subtype="PCM_24")
  whole, _ = audio.read_audio(path, sample_rate=14700, mono=False)
  blocks = list(audio.iter_audio_blocks(path, block_frames=3000, sample_rate=14700))
  assert len(blocks) > 3
  np.testing.assert_allclose(np.concatenate(blocks), whole, atol=1e-6)


# ------------------------------------------------------------------------------------- user API
def test_audio_separator_any_rate_and_channels(separator):
  sep = inference.AudioSeparator(separator, chunk_seconds=0.3)
  x = _noise(22050, channels=2, seed=4)  # 0.5 s of stereo at 44.1 kHz
  calls = []
  out = sep.separate(x, 44100, progress=lambda d, t: calls.append((d, t)))
  assert set(out) == set(separator.source_names)
  assert all(v.shape == x.shape and v.dtype == np.float32 for v in out.values())
  assert calls and calls[-1][0] == calls[-1][1]
  left = sep.separate(x[:, 0], 44100)  # each channel on its own
  for name in out:
    assert left[name].shape == (x.shape[0],)
    np.testing.assert_allclose(out[name][:, 0], left[name], atol=1e-5)
  down = sep.separate(tf.constant(x), 44100, downmix=True)
  assert down["sine"].shape == (x.shape[0],)
  # At the model's rate nothing is resampled: the same as separate_long.
  y = _noise(3 * sep.chunk_length, seed=5)
  same = sep.separate(y, separator.sample_rate)
  ref = separator.separate_long(y, sep.chunk_length, sep.overlap)
  np.testing.assert_allclose(np.stack([same[n] for n in separator.source_names]), ref, atol=1e-6)


def test_audio_separator_rejects_bad_waveforms(separator):
  sep = inference.AudioSeparator(separator)
  with pytest.raises(audio.AudioError, match="non-finite"):
    sep.separate(np.array([0.0, np.nan, 0.1], np.float32), 16000)
  with pytest.raises(audio.AudioError, match="empty"):
    sep.separate(np.zeros([0], np.float32), 16000)
  with pytest.raises(ValueError, match="channels, time"):
    sep.separate(np.zeros([2, 1000], np.float32), 16000)


def test_separate_file_streams_and_writes_atomically(separator, tmp_path):
  sep = inference.AudioSeparator(separator, chunk_seconds=0.25, block_seconds=0.1)
  src = str(tmp_path / "song.wav")
  x = _noise(40000, channels=2, seed=6)
  audio.write_audio(src, x, 16000, subtype="FLOAT")
  paths = sep.separate_file(src, str(tmp_path / "out"), fmt="flac", subtype="PCM_24")
  assert sorted(paths) == sorted(separator.source_names)
  for name, path in paths.items():
    assert path == str(tmp_path / "out" / "song" / f"{name}.flac")
    info = sf.info(path)
    assert (info.samplerate, info.channels, info.frames) == (16000, 2, 40000)
  # The streamed file equals the in-memory API (which resamples and separates the whole array at once).
  ref = sep.separate(x, 16000)
  got, _ = audio.read_audio(paths["square"], mono=False)
  np.testing.assert_allclose(got, np.clip(ref["square"], -1, 1), atol=2e-6)
  assert _files(tmp_path / "out") == sorted(f"song/{n}.flac" for n in separator.source_names)


def test_separate_file_bad_input_late_in_file_leaves_nothing(separator, tmp_path):
  sep = inference.AudioSeparator(separator, chunk_seconds=0.25, block_seconds=0.1)
  x = _noise(30000, seed=7)
  x[25000] = np.inf  # found only when its block is read, after outputs were started
  src = str(tmp_path / "late.wav")
  sf.write(src, x, 16000, subtype="FLOAT")
  out = tmp_path / "out"
  with pytest.raises(audio.AudioError, match="non-finite"):
    sep.separate_file(src, str(out))
  assert not out.exists() or _files(out) == []


def test_commit_together_is_all_or_nothing(tmp_path):
  writers = [audio.AudioFileWriter(str(tmp_path / f"{n}.wav"), 8000, 1) for n in ("a", "b")]
  for w in writers:
    w.write(np.zeros(100, np.float32))
  (tmp_path / "b.wav").write_bytes(b"user data")  # appears before the commit
  with pytest.raises(FileExistsError, match="b.wav"):
    audio.commit_together(writers)
  assert _files(tmp_path) == ["b.wav"] and (tmp_path / "b.wav").read_bytes() == b"user data"
  with pytest.raises(audio.AudioError, match="non-finite"):
    with audio.AudioFileWriter(str(tmp_path / "c.wav"), 8000, 1) as w:
      w.write(np.array([0.0, np.nan], np.float32))
  assert _files(tmp_path) == ["b.wav"]


def test_find_inputs_and_track_names(tmp_path):
  (tmp_path / "song.flac").write_bytes(b"x")
  (tmp_path / ".hidden.wav").write_bytes(b"x")
  (tmp_path / "track1").mkdir()
  (tmp_path / "track1" / "mixture.wav").write_bytes(b"x")
  (tmp_path / "track1" / "violin.wav").write_bytes(b"x")  # a stem, not an input
  found = inference.find_inputs(str(tmp_path))
  assert found == [str(tmp_path / "song.flac"), str(tmp_path / "track1" / "mixture.wav")]
  assert [inference.track_name(p) for p in found] == ["song", "track1"]


# ------------------------------------------------------------------------------------------------ CLI
def _cli(*args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="-1")
  return subprocess.run([sys.executable, "-m", "vsep_tf.separate", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)


def _write_inputs(root):
  root.mkdir()
  t = np.arange(16000) / 16000.0
  stereo = np.stack([np.sin(2 * np.pi * 330 * t), np.sign(np.sin(2 * np.pi * 110 * t))], axis=1) * 0.4
  sf.write(str(root / "good.wav"), stereo, 16000, subtype="PCM_16")
  (root / "notaudio.wav").write_text("this is not audio\n")
  (root / "empty.flac").write_bytes(b"")
  nan = (0.1 * np.sin(np.arange(8000) / 5.0)).astype(np.float32)
  nan[6000] = np.nan
  sf.write(str(root / "nan.wav"), nan, 16000, subtype="FLOAT")
  (root / "song.mp3").write_bytes(b"ID3\x03\x00\x00\x00\x00\x00\x00" + b"\x00" * 256)


def test_cli_missing_model_dir(tmp_path):
  _write_inputs(tmp_path / "in")
  r = _cli(f"--model_dir={tmp_path / 'nope'}", f"--input={tmp_path / 'in' / 'good.wav'}",
           f"--output_dir={tmp_path / 'out'}")
  assert r.returncode != 0
  assert "nope: no such directory" in r.stderr
  assert not (tmp_path / "out").exists()


def test_cli_bad_inputs_no_partial_outputs_no_clobbering(tiny_supervised_dir, separator, tmp_path):
  inp, out = tmp_path / "in", tmp_path / "out"
  _write_inputs(inp)
  names = separator.source_names
  expected = sorted(f"good/{n}.wav" for n in names)

  # A directory of one good and four bad inputs: each bad one named with its problem, only good/ written.
  r = _cli(f"--model_dir={tiny_supervised_dir}", f"--input={inp}", f"--output_dir={out}", "--chunk_seconds=0.2")
  assert r.returncode == 1, r.stderr
  for name, problem in [("notaudio.wav", "not a readable audio file"), ("empty.flac", "empty file"),
                        ("nan.wav", "non-finite"), ("song.mp3", "unsupported format")]:
    assert any(name in line and problem in line for line in r.stderr.splitlines()), (name, r.stderr)
  assert "4 of 5 input(s) failed" in r.stderr
  assert _files(out) == expected  # no partial files, no temporaries, no empty track folders
  info = sf.info(str(out / "good" / "sine.wav"))
  assert (info.samplerate, info.channels, info.frames) == (16000, 2, 16000)
  before = {f: (out / f).read_bytes() for f in expected}
  (out / "good" / "sine.wav").write_bytes(b"keep me")  # a user's file where an output would go
  before["good/sine.wav"] = b"keep me"

  # Outputs exist: refused, nothing touched.
  r = _cli(f"--model_dir={tiny_supervised_dir}", f"--input={inp / 'good.wav'}", f"--output_dir={out}")
  assert r.returncode == 1 and "--overwrite" in r.stderr, r.stderr
  assert {f: (out / f).read_bytes() for f in expected} == before
  assert _files(out) == expected

  # --overwrite replaces them all (in-process: the CLI calls the same separate_file).
  sep = inference.AudioSeparator(separator)
  sep.separate_file(str(inp / "good.wav"), str(out), overwrite=True, subtype="FLOAT")
  assert _files(out) == expected
  assert sf.info(str(out / "good" / "sine.wav")).subtype == "FLOAT"
