"""The `python -m vsep_tf.separate` command line (and the flags it shares with the TF-Serving client), run as a
real process on real files with a tiny model made by the real trainer (conftest.tiny_supervised_dir).

Every error is one line '<prog>: error: ...' on stderr and a non-zero exit; usage errors answer before TensorFlow
is imported. SIGTERM / SIGINT stop a separation within a second, leave no temporary file, keep the tracks already
completed and print one line. stderr lines of TensorFlow's / absl's own logging are ignored (LOG_NOISE).
"""
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

from vsep_tf import audio
from vsep_tf import cli
from vsep_tf import inference
from vsep_tf import model_dir as model_dir_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Lines that are not the CLI's: TensorFlow / XLA start-up logging (absl C++ format, printed whatever
# TF_CPP_MIN_LOG_LEVEL), absl Python warnings (e.g. clipped samples), and the progress line.
LOG_NOISE = re.compile(r"WARNING: All log messages before absl::InitializeLog\(\)|[IWE]\d{4} [\d:.]+ +\d+ \S+:\d+\] ")
PROGRESS = re.compile(r"\[[=.]+\] (\d+)/(\d+) chunks")


def _run(*args, module="vsep_tf.separate", timeout=300):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="-1")
  return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=timeout)


def _messages(stderr: str) -> list:
  """The CLI's own lines on stderr (progress redraws are '\\r'-separated: text mode turned them into lines)."""
  return [line for line in stderr.splitlines()
          if line.strip() and not LOG_NOISE.match(line) and not PROGRESS.search(line)]


def _files(root):
  """Every file under root (relative paths), hidden temporaries included."""
  return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


def _sources(stdout: str) -> list:
  """The source names from a '... -> out/<track>/{a,b,c}.wav' line."""
  return re.search(r"/\{([^}]*)\}\.", stdout).group(1).split(",")


def _tone(seconds, rate, channels=2):
  t = np.arange(int(seconds * rate)) / rate
  x = np.stack([np.sin(2 * np.pi * 330 * t), np.sign(np.sin(2 * np.pi * 110 * t))], axis=1)[:, :channels]
  return 0.4 * x


def test_flag_constants_agree_with_the_library():
  assert cli.FORMATS == inference.FORMATS
  assert cli.SUBTYPES == tuple(audio.SUBTYPES)
  assert cli.QUALITIES == model_dir_lib.QUALITIES


def test_usage_errors_are_one_line_before_tensorflow(tmp_path):
  good = tmp_path / "good.wav"
  sf.write(str(good), _tone(0.1, 16000), 16000)
  (tmp_path / "a_file").write_text("x")
  model = tmp_path  # exists: usage is checked before the model is loaded
  io = [f"--input={good}", f"--output_dir={tmp_path / 'out'}"]
  cases = [
      ([], "--model_dir is required"),
      ([f"--model_dir={tmp_path / 'nope'}", *io], "nope: no such file or directory"),
      ([f"--model_dir={model}", "--format=mp3", *io], "--format=mp3: value should be one of <wav|flac>"),
      ([f"--model_dir={model}", "--no_such_flag=1", *io], "Unknown command line flag 'no_such_flag'"),
      ([f"--model_dir={model}", "--chunk_seconds=abc", *io], "--chunk_seconds=abc"),
      ([f"--model_dir={model}", f"--output_dir={tmp_path}"], "--input is required"),
      ([f"--model_dir={model}", f"--input={good}"], "--output_dir is required"),
      ([f"--model_dir={model}", f"--input={tmp_path / 'missing.wav'}", f"--output_dir={tmp_path}"],
       "missing.wav: no such file or directory"),
      ([f"--model_dir={model}", f"--input={good}", f"--output_dir={tmp_path / 'a_file'}"], "not a directory"),
      ([f"--model_dir={model}", *io, "stray"], "unexpected arguments ['stray']"),
      ([f"--model_dir={model}", *io, "--chunk_seconds=-1"], "--chunk_seconds must be >= 0"),
      ([f"--model_dir={model}", *io, "--batch_size=0"], "--batch_size must be >= 1"),
      ([f"--model_dir={model}", *io, "--format=flac", "--subtype=FLOAT"], "--format=flac stores integer samples"),
  ]
  for args, expected in cases:
    r = _run(*args)
    assert r.returncode == 2, (args, r.stderr)
    assert r.stderr.splitlines() == [r.stderr.strip()] and r.stderr.startswith("separate: error: "), (args, r.stderr)
    assert expected in r.stderr, (args, r.stderr)
  assert not (tmp_path / "out").exists()
  # Answered without importing TensorFlow (a second, not five or more).
  probe = ("import runpy, sys\n"
           f"sys.argv = ['separate', '--model_dir={model}', '--batch_size=0', *{io!r}]\n"
           "try:\n  runpy.run_module('vsep_tf.separate', run_name='__main__')\n"
           "except SystemExit as e:\n  print(e.code, 'tensorflow' in sys.modules)\n")
  r = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert r.stdout.split() == ["2", "False"], (r.stdout, r.stderr)


def test_model_that_does_not_load_is_one_line(tmp_path):
  sf.write(str(tmp_path / "good.wav"), _tone(0.1, 16000), 16000)
  (tmp_path / "not_a_model").mkdir()
  r = _run(f"--model_dir={tmp_path / 'not_a_model'}", f"--input={tmp_path / 'good.wav'}",
           f"--output_dir={tmp_path / 'out'}")
  assert r.returncode == 2
  messages = _messages(r.stderr)
  assert len(messages) == 1 and messages[0].startswith("separate: error: --model_dir="), r.stderr
  assert "not_a_model: cannot load a model" in messages[0] and "Traceback" not in r.stderr, r.stderr
  assert not (tmp_path / "out").exists()


def test_serving_client_shares_the_flags_and_messages(tmp_path):
  sf.write(str(tmp_path / "good.wav"), _tone(0.1, 16000), 16000)
  r = _run("--server=localhost:1", "--model_name=toy", "--timeout=10", f"--input={tmp_path / 'good.wav'}",
           f"--output_dir={tmp_path / 'out'}", module="vsep_tf.export.client")  # nothing listens on port 1
  assert r.returncode == 2, r.stderr
  messages = _messages(r.stderr)
  assert len(messages) == 1 and messages[0].startswith("serving_client: error: localhost:1 model 'toy': UNAVAILABLE")
  assert "Traceback" not in r.stderr and not (tmp_path / "out").exists()


TRACK = "Artist - Title"


def _write_inputs(root):
  """One good file, four bad ones and a track folder (MUSDB18-HQ layout: its mixture, 15 s, and its stems)."""
  root.mkdir()
  sf.write(str(root / "good.wav"), _tone(1.0, 16000), 16000, subtype="PCM_16")
  (root / "notaudio.wav").write_text("this is not audio\n")
  (root / "empty.flac").write_bytes(b"")
  nan = (0.1 * np.sin(np.arange(8000) / 5.0)).astype(np.float32)
  nan[6000] = np.nan
  sf.write(str(root / "nan.wav"), nan, 16000, subtype="FLOAT")
  (root / "song.mp3").write_bytes(b"ID3\x03\x00\x00\x00\x00\x00\x00" + b"\x00" * 256)
  (root / TRACK).mkdir()
  mixture = _tone(15.0, 16000)
  sf.write(str(root / TRACK / "mixture.wav"), mixture, 16000)
  for stem, k in (("vocals", 0), ("drums", 1)):
    sf.write(str(root / TRACK / f"{stem}.wav"), mixture[:, [k, k]], 16000)


def test_folder_each_error_once_track_folders_progress_no_partial_outputs(tiny_supervised_dir, tmp_path):
  inp, out = tmp_path / "in", tmp_path / "out"
  _write_inputs(inp)

  # A folder of one good file, four bad ones and a track folder: each bad one named once with its problem, then a
  # count; the track folder is one track (its mixture), its stems are not inputs; nothing else is written.
  r = _run(f"--model_dir={tiny_supervised_dir}", f"--input={inp}", f"--output_dir={out}")
  assert r.returncode == 1, r.stderr
  messages = _messages(r.stderr)
  problems = {"notaudio.wav": "not a readable audio file", "empty.flac": "empty file", "nan.wav": "non-finite",
              "song.mp3": "unsupported format"}
  for name, problem in problems.items():
    lines = [m for m in messages if name in m]
    assert len(lines) == 1 and lines[0].startswith("separate: error: ") and problem in lines[0], (name, r.stderr)
  assert messages[-1] == "separate: 4 of 6 input(s) failed (no output written for them)", r.stderr
  assert len(messages) == 5 and "Traceback" not in r.stderr, r.stderr
  names = _sources(r.stdout)
  assert [line.split(":")[0] for line in r.stdout.splitlines()] == [str(inp / TRACK / "mixture.wav"),
                                                                    str(inp / "good.wav")]
  expected = sorted(f"{track}/{n}.wav" for track in ("good", TRACK) for n in names)
  assert len(names) >= 2 and _files(out) == expected  # no partial files, no temporaries, no empty track folders
  for track, seconds in (("good", 1.0), (TRACK, 15.0)):
    info = sf.info(str(out / track / f"{names[0]}.wav"))
    assert (info.samplerate, info.channels, info.frames) == (16000, 2, int(seconds * 16000))
  # 15 s in the model's chunks (about 4.5 s): the progress line moves at every chunk, not per batch of chunks.
  steps = [(int(m.group(1)), int(m.group(2))) for line in r.stderr.splitlines() if line.startswith(f"{TRACK} [")
           for m in [PROGRESS.search(line)]]
  total = steps[-1][1]
  assert total >= 4 and steps == [(d, total) for d in range(total + 1)], r.stderr
  (out / TRACK / f"{names[0]}.wav").write_bytes(b"keep me")  # a user's file where an output would go
  before = {f: (out / f).read_bytes() for f in expected}

  # The track folder itself: the same one track, whose outputs exist: refused in one line, nothing touched.
  r = _run(f"--model_dir={tiny_supervised_dir}", f"--input={inp / TRACK}", f"--output_dir={out}")
  assert r.returncode == 1 and r.stdout == "", r.stderr
  messages = _messages(r.stderr)
  assert len(messages) == 1 and messages[0].startswith(f"separate: error: {inp / TRACK / 'mixture.wav'}: "), r.stderr
  assert f"{out / TRACK / names[0]}.wav" in messages[0] and "--overwrite" in messages[0], r.stderr
  assert {f: (out / f).read_bytes() for f in expected} == before and _files(out) == expected


@pytest.fixture(scope="module")
def long_inputs(tmp_path_factory):
  """a.wav (1 s) is separated in well under a second; b.wav (10 min) takes several seconds."""
  root = tmp_path_factory.mktemp("signal_inputs")
  rng = np.random.RandomState(0)
  sf.write(str(root / "a.wav"), (0.3 * rng.randn(16000)).astype(np.float32), 16000, subtype="PCM_16")
  sf.write(str(root / "b.wav"), (0.3 * rng.randn(600 * 16000)).astype(np.float32), 16000, subtype="PCM_16")
  return root


@pytest.mark.parametrize("signum, progress", [(signal.SIGTERM, "--progress"), (signal.SIGINT, "--noprogress")])
def test_signal_stops_at_once_and_leaves_no_partial_output(tiny_supervised_dir, long_inputs, tmp_path, signum,
                                                           progress):
  out = tmp_path / "out"
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="-1")
  proc = subprocess.Popen([sys.executable, "-m", "vsep_tf.separate", f"--model_dir={tiny_supervised_dir}",
                           f"--input={long_inputs}", f"--output_dir={out}", progress], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    deadline = time.monotonic() + 120
    # a/ is complete and b's hidden temporary files are being written: b is in the middle of its separation.
    while not (out / "b").is_dir() or not any(f.endswith(".tmp") for f in os.listdir(out / "b")):
      assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
      time.sleep(0.01)
    sent = time.monotonic()
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=30)
    elapsed = time.monotonic() - sent
  finally:
    proc.kill()
  name = signal.Signals(signum).name
  assert proc.returncode == 128 + signum, stderr
  assert elapsed < 5, elapsed
  assert _messages(stderr) == [f"separate: interrupted ({name}); no partial output left"], stderr
  assert "Traceback" not in stderr
  names = _sources(stdout)
  assert stdout.startswith(f"{long_inputs / 'a.wav'}: 1.0 s of audio") and len(stdout.splitlines()) == 1
  assert _files(out) == sorted(f"a/{n}.wav" for n in names)  # a stays; nothing of b, not even its folder
