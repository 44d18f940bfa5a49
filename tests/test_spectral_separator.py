"""--job=spectral_separator (the default job) on the toy (configs/research/toy_spectral.flags) end to end through
real subprocesses: `python -m vsep_tf.train` trains the spectral priors into <model_dir>/priors, then the amortised
encoder into <model_dir>, prints the command that separates with it; the same command with more --train_steps
resumes the encoder from its checkpoint and skips the finished priors stage; `python -m vsep_tf.separate` and
`python -m vsep_tf.evaluate` accept the directory. Shrunk to a few steps per stage and small networks: this checks
the plumbing, not quality."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vsep_tf import audio
from vsep_tf.model_dir import MANIFEST_FILENAME, PRIORS_SUBDIR, read_manifest

REPO = Path(__file__).resolve().parents[1]
TOY = ["sine", "square", "sawtooth", "triangle"]
SMALL = ["--prior_steps=4", "--spectral.n_fft=256", "--spectral.hop=64", "--spectral.hidden_units=16",
         "--spectral_encoder.hidden_units=16", "--crop_length=4096", "--batch_size=2", "--prior_batch_size=16",
         "--max_solo_seconds=5", "--steps_per_loop=2", "--checkpoint_every=4", "--audio_summary_seconds=0"]


def _run(*args, timeout=300):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO))
  return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=timeout, check=False)


def _final(stdout):
  line = next(line for line in stdout.splitlines() if line.startswith("final "))
  return dict(kv.split("=", 1) for kv in line.split()[1:])


def _checkpoints(directory):
  return sorted(p.name for p in (directory / "checkpoints").glob("ckpt-*.index"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """(model_dir, the train command, the first run's stdout): 4 prior steps, then 4 encoder steps."""
  model_dir = tmp_path_factory.mktemp("spectral_separator") / "toy"
  cmd = ["vsep_tf.train", "--flagfile=configs/research/toy_spectral.flags", f"--model_dir={model_dir}", *SMALL]
  proc = _run(*cmd, "--train_steps=4")
  assert proc.returncode == 0, proc.stderr[-3000:]
  return model_dir, cmd, proc.stdout


def test_trains_priors_then_encoder_into_one_directory(trained):
  model_dir, _, stdout = trained
  prior_dir = model_dir / PRIORS_SUBDIR
  assert (prior_dir / MANIFEST_FILENAME).exists() and _checkpoints(prior_dir) == ["ckpt-4.index"]
  assert (model_dir / MANIFEST_FILENAME).exists() and _checkpoints(model_dir) == ["ckpt-4.index"]
  assert (model_dir / "config.flags").exists() and not (prior_dir / "config.flags").exists()
  manifest = read_manifest(str(model_dir))
  assert manifest["separator"] == "spectral_encoder" and manifest["settings"]["job"] == "spectral_encoder"
  assert manifest["components"] == {"priors": "priors"}  # relative: the directory moves as one
  assert manifest["source_names"] == TOY and manifest["sample_rate"] == 14700 and manifest["mix"] == "mean"
  assert manifest["settings"]["spectral_encoder.hidden_units"] == 16
  priors = read_manifest(str(prior_dir))
  assert priors["separator"] == "spectral" and priors["settings"]["spectral.n_fft"] == 256
  final = _final(stdout)
  assert final["step"] == "4" and "priors/total_loss" in final and "total_loss" in final
  assert all(np.isfinite(float(v)) for v in final.values())
  # It ends by printing the command that separates a file with the model.
  assert (f"python -m vsep_tf.separate --model_dir={model_dir} --input=song.wav --output_dir=separated"
          in stdout), stdout[-2000:]


def test_rerun_with_more_steps_resumes_the_encoder_and_skips_the_priors(trained):
  model_dir, cmd, _ = trained
  prior_ckpt = model_dir / PRIORS_SUBDIR / "checkpoints" / "ckpt-4.index"
  before = prior_ckpt.stat().st_mtime_ns
  proc = _run(*cmd, "--train_steps=8")
  assert proc.returncode == 0, proc.stderr[-3000:]
  final = _final(proc.stdout)
  assert final["step"] == "8"
  assert not [k for k in final if k.startswith("priors/")]  # the priors stage had nothing left to do
  assert _checkpoints(model_dir / PRIORS_SUBDIR) == ["ckpt-4.index"] and prior_ckpt.stat().st_mtime_ns == before
  assert _checkpoints(model_dir) == ["ckpt-4.index", "ckpt-8.index"]
  # Both stages restored their checkpoints (the priors at their last step, the encoder where it stopped).
  assert re.search(r"restored \S*ckpt-4 at step 4", proc.stderr), proc.stderr[-2000:]
  assert len(re.findall(r"restored \S*ckpt-4 at step 4", proc.stderr)) == 2, proc.stderr[-2000:]


def test_separate_and_evaluate_accept_the_directory(trained, tmp_path):
  model_dir, _, _ = trained
  rng = np.random.default_rng(0)
  song = tmp_path / "song.wav"
  audio.write_audio(str(song), (0.3 * rng.standard_normal(14700)).astype(np.float32), 14700)
  out = tmp_path / "separated"
  proc = _run("vsep_tf.separate", f"--model_dir={model_dir}", f"--input={song}", f"--output_dir={out}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  written = sorted(p.name for p in out.rglob("*.wav"))
  assert written == sorted(f"{name}.wav" for name in TOY), written
  for quality, iterations in [("fast", 0), ("best", 5)]:
    # the default (fast): one pass; best: the saved settings (here a 5-step fit: toy_spectral.flags saves none)
    result = tmp_path / f"eval_{quality}.json"
    proc = _run("vsep_tf.evaluate", f"--model_dir={model_dir}", "--dataset=toy", "--num_examples=2",
                "--num_workers=0", f"--output_json={result}",
                *(["--quality=best", "--model_override=--spectral_search.iterations=5"] if quality == "best" else []))
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(result.read_text())
    assert r["num_tracks"] == 2 and r["model_dir"] == str(model_dir) and r["method"] == "spectral"
    assert set(r["sources"]) == set(TOY) and np.isfinite(r["overall"]["si_sdr"])
    assert r["separator"]["iterations"] == iterations
    assert r["flags"]["quality"] == quality
