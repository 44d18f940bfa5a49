"""Chunked / streamed separation, the user API (any rate, any channels), the file loop and its cancellation.

The model is a tiny supervised encoder made by the real trainer (conftest.tiny_supervised_dir): a non-causal
WaveNet with a receptive field of 15 samples, far below the cross-fade, so chunked separation must reproduce
separation of the whole signal. The `python -m vsep_tf.separate` command line is tested in test_separate_cli.py.
"""
import os
import threading

import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

from vsep_tf import audio
from vsep_tf import inference
from vsep_tf.model_dir import load_separator
from vsep_tf.separators.base import Separator

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
  (tmp_path / "notes.txt").write_bytes(b"x")  # reported as unsupported, not skipped
  (tmp_path / "track1").mkdir()
  (tmp_path / "track1" / "mixture.wav").write_bytes(b"x")
  (tmp_path / "track1" / "violin.wav").write_bytes(b"x")  # a stem, not an input
  (tmp_path / "stems_only").mkdir()
  (tmp_path / "stems_only" / "violin.wav").write_bytes(b"x")  # no mixture: not a track folder
  found = inference.find_inputs(str(tmp_path))
  assert found == [str(tmp_path / f) for f in ("notes.txt", "song.flac", "track1/mixture.wav")]
  assert [inference.track_name(p) for p in found] == ["notes", "song", "track1"]
  # A track folder given itself is one track, its mixture (MUSDB18-HQ: <track>/{mixture,vocals,...}.wav), named
  # after the folder, with or without a trailing slash.
  for given in (str(tmp_path / "track1"), str(tmp_path / "track1") + os.sep):
    assert inference.find_inputs(given) == [os.path.join(given, "mixture.wav")]
    assert inference.track_name(inference.find_inputs(given)[0]) == "track1"
  assert inference.find_inputs(str(tmp_path / "song.flac")) == [str(tmp_path / "song.flac")]
  assert inference.find_inputs(str(tmp_path / "stems_only")) == [str(tmp_path / "stems_only" / "violin.wav")]


# ------------------------------------------------------------------------------------------------ progress
class _Counting(Separator):
  """The tiny separator, recording the rows of every `separate` call (what the batching under test decides)."""

  def __init__(self, inner):
    self.inner, self.rows = inner, []
    self.source_names, self.sample_rate, self.mix = inner.source_names, inner.sample_rate, inner.mix
    self.chunk_length, self.chunk_overlap = inner.chunk_length, inner.chunk_overlap

  def separate(self, mix):
    self.rows.append(int(np.shape(mix)[0]))
    return self.inner.separate(mix)


@pytest.mark.parametrize("chunks, channels, per_call", [(1, 1, 1), (5, 2, 1), (10, 1, 1), (20, 1, 2), (20, 2, 2),
                                                         (100, 1, 4), (100, 2, 2)])
def test_progress_moves_at_least_8_times_and_long_files_keep_their_batches(separator, tmp_path, chunks, channels,
                                                                          per_call):
  counting = _Counting(separator)
  sep = inference.AudioSeparator(counting, chunk_seconds=CHUNK / separator.sample_rate, batch_size=4)
  assert (sep.chunk_length, sep.overlap) == (CHUNK, CHUNK // 2)
  frames = CHUNK + (chunks - 1) * (CHUNK // 2) - 100 if chunks > 1 else CHUNK - 100
  assert sep.num_chunks(frames) == chunks
  src = str(tmp_path / "in.wav")
  x = _noise(frames, channels=channels, seed=chunks)
  audio.write_audio(src, x, separator.sample_rate, subtype="FLOAT")
  calls = []
  paths = sep.separate_file(src, str(tmp_path / "out"), subtype="FLOAT", progress=lambda d, t: calls.append((d, t)))
  # Progress after every call, in steps of per_call chunks: per chunk for files of fewer than 16 chunks (at least 8
  # steps from 8 chunks on), the full batch of 4 chunks (of 4 rows: mono) once a file has 32 chunks or more.
  assert calls == [(min(i + per_call, chunks), chunks) for i in range(0, chunks, per_call)]
  assert len(calls) >= min(chunks, inference.MIN_PROGRESS_STEPS)
  assert counting.rows == [min(per_call, chunks - i) * channels for i in range(0, chunks, per_call)]
  # The same chunks as one pass with the full batch: the same result.
  got, _ = audio.read_audio(paths["sine"], mono=False)
  for c in range(channels):
    ref = separator.separate_long(x[:, c], CHUNK, CHUNK // 2, batch_size=4)[0]
    np.testing.assert_allclose(got[:, c], ref, atol=1e-5)


# --------------------------------------------------------------------------------------------- file loop
def test_separate_files_track_folders_results_and_listener(separator, tmp_path):
  root = tmp_path / "in"
  for track in ("t1", "t2"):  # MUSDB18-HQ layout: the mixture and its stems
    (root / track).mkdir(parents=True)
    for stem in ("mixture", "vocals", "drums"):
      audio.write_audio(str(root / track / f"{stem}.wav"), _noise(9000, channels=2, seed=len(stem)), 22050)
  audio.write_audio(str(root / "song.flac"), _noise(5000), 16000)
  (root / "bad.wav").write_text("not audio")
  events = []

  class Recorder(inference.Listener):

    def start(self, path, track, seconds, chunks):
      events.append(("start", track, round(seconds, 3), chunks))

    def progress(self, done, total):
      events.append(("progress", done, total))

    def done(self, result):
      events.append(("done", result.track, result.ok))

  sep = inference.AudioSeparator(separator, chunk_seconds=0.1)
  out = tmp_path / "out"
  # A track folder is one track: its mixture, named after the folder; its stems are not separated.
  results = inference.separate_files(sep, inputs=str(root / "t1"), output_dir=str(out), listener=Recorder())
  assert [(r.track, r.ok) for r in results] == [("t1", True)]
  assert _files(out) == sorted(f"t1/{n}.wav" for n in separator.source_names)
  assert sf.info(str(out / "t1" / "sine.wav")).frames == 9000 and sf.info(str(out / "t1" / "sine.wav")).channels == 2
  chunks = sep.num_chunks(audio.resampled_length(9000, 22050, separator.sample_rate))
  assert chunks >= inference.MIN_PROGRESS_STEPS
  assert events == [("start", "t1", round(9000 / 22050, 3), chunks),
                    *[("progress", d, chunks) for d in range(1, chunks + 1)], ("done", "t1", True)]
  # A folder of track folders and files, as before: each track folder's mixture, each file; a bad input fails
  # alone; explicit arguments, no flags. Outputs that exist (t1/*.wav) make a track fail, untouched.
  before = (out / "t1" / "sine.wav").read_bytes()
  results = inference.separate_files(separator, inputs=[str(root)], output_dir=str(out), fmt="flac",
                                     subtype="PCM_24", chunk_seconds=0.1, batch_size=2, downmix=True)
  assert [(r.track, r.ok) for r in results] == [("bad", False), ("song", True), ("t1", True), ("t2", True)]
  assert "not a readable audio file" in results[0].error and results[0].path in results[0].error
  assert sf.info(results[1].outputs["sine"]).channels == 1  # downmix
  assert (out / "t1" / "sine.wav").read_bytes() == before
  results = inference.separate_files(separator, inputs=str(root / "t1"), output_dir=str(out))
  assert not results[0].ok and "--overwrite" in results[0].error
  (tmp_path / "empty").mkdir()
  with pytest.raises(audio.AudioError, match="no audio files found"):
    inference.separate_files(separator, inputs=str(tmp_path / "empty"), output_dir=str(out))


def test_cancellation_from_another_thread_leaves_no_partial_output(separator, tmp_path):
  root, out = tmp_path / "in", tmp_path / "out"
  root.mkdir()
  audio.write_audio(str(root / "a.wav"), _noise(8000), separator.sample_rate)
  audio.write_audio(str(root / "b.wav"), _noise(60000), separator.sample_rate)
  cancel = inference.Cancellation()
  in_b, resume, outcome = threading.Event(), threading.Event(), {}

  class PauseInB(inference.Listener):  # holds the worker in the middle of track b until the test has cancelled
    track = None

    def start(self, path, track, seconds, chunks):
      self.track = track

    def progress(self, done, total):
      if self.track == "b" and not in_b.is_set():
        in_b.set()
        resume.wait(30)

  def work():
    try:
      inference.separate_files(separator, inputs=str(root), output_dir=str(out), chunk_seconds=0.2,
                               listener=PauseInB(), cancel=cancel)
    except BaseException as e:  # pylint: disable=broad-except
      outcome["error"] = e

  worker = threading.Thread(target=work, daemon=True)
  worker.start()
  assert in_b.wait(60)
  names = sorted(f"{n}.wav" for n in separator.source_names)
  temps = [f for f in _files(out) if f.startswith("b/")]
  assert len(temps) == len(names) and all(os.path.basename(f).startswith(".") and f.endswith(".tmp")
                                          for f in temps), temps
  removed = cancel.cancel()  # while the worker is in the middle of b: nothing of b is left when it returns
  assert len(removed) == len(names) + 1  # the temporary files and the folder b/
  assert _files(out) == [f"a/{n}" for n in names]
  resume.set()
  worker.join(30)
  assert isinstance(outcome.get("error"), inference.Cancelled)
  assert _files(out) == [f"a/{n}" for n in names]
  with pytest.raises(inference.Cancelled):  # stays cancelled
    inference.separate_files(separator, inputs=str(root), output_dir=str(tmp_path / "again"), cancel=cancel)
  assert not (tmp_path / "again").exists()
