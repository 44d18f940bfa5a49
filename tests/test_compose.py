"""Priors compose (issue 18 item 5): separate a mix of any subset of the classes one has priors for, and add a
class's prior without retraining the others. A tiny spectral separator (priors + amortised encoder, 2 steps each)
made by the real trainer on a tiny stem folder of synthetic tones (8 kHz) for low / buzz / saw, and a spectral
prior directory for a fourth class, bell, written as the trainer lays it out (manifest + checkpoint of untrained
weights). This checks the plumbing and the arithmetic (order, renormalised shares, estimates that add up to the
mix), not quality."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import REPO, parse_config, train_tiny_model
from vsep_tf import audio
from vsep_tf import cli
from vsep_tf import evaluate as evaluate_lib
from vsep_tf.model_dir import SourcesError, load_separator, read_manifest, write_manifest
from vsep_tf.priors.spectral import build_spectral_prior
from vsep_tf.separators.nmf import NMFSeparator

SR = 8000
CLASSES = ("buzz", "low", "saw")  # a stem folder's classes: its file names, sorted
TINY = ["--dataset=stems", "--mix=sum", "--min_rms=0", "--gain_db=0", "--spectral.n_fft=256", "--spectral.hop=64",
        "--spectral.hidden_units=16", "--spectral.latent_dim=4", "--spectral_encoder.hidden_units=16",
        "--crop_length=2048", "--batch_size=2", "--prior_batch_size=16", "--max_solo_seconds=4",
        "--steps_per_loop=2", "--checkpoint_every=2", "--train_steps=2", "--prior_steps=2",
        "--audio_summary_seconds=0"]
FAST = ["--spectral_search.iterations=2"]
ONE_PASS = ["--spectral_search.iterations=0"]


def _tone(kind, freq, seconds, phase=0.0):
  t = np.arange(int(seconds * SR)) / SR
  u = (freq * t + phase) % 1.0
  x = {"low": np.sin(2 * np.pi * u), "buzz": np.sign(np.sin(2 * np.pi * u)), "saw": 2 * u - 1,
       "bell": np.sin(2 * np.pi * u) * np.exp(-3 * (t % 0.5))}[kind]
  return (0.2 * x).astype(np.float32)


def _write_folder(root, classes, splits):
  for split, tracks in splits.items():
    for j in range(tracks):
      d = root / split / f"{split}{j}"
      d.mkdir(parents=True)
      for k, name in enumerate(classes):
        audio.write_audio(str(d / f"{name}.wav"), _tone(name, 110 * (k + 2) * (1 + 0.1 * j), 1.5, 0.1 * j), SR,
                          subtype="FLOAT")
  return root


@pytest.fixture(scope="module")
def models(tmp_path_factory):
  """(stem folder, spectral separator dir for CLASSES, spectral prior dir for 'bell')."""
  base = tmp_path_factory.mktemp("compose")
  stems = _write_folder(base / "stems", CLASSES, {"train": 2, "test": 2})
  model = train_tiny_model(base / "model", "configs/chorales.flags", [*TINY, f"--data_root={stems}"])
  bell = base / "bell"
  cfg = parse_config("configs/chorales.flags", *TINY, "--job=spectral", f"--model_dir={bell}")
  prior = build_spectral_prior(n_fft=256, hop=64, latent_dim=4, hidden_units=16)
  tf.train.Checkpoint(priors={"bell": prior}).save(str(bell / "checkpoints" / "ckpt"))
  write_manifest(str(bell), cfg, ["bell"], SR, "sum")
  return stems, model, str(bell)


def _mix(names, seconds=0.75):
  return np.sum([_tone(n, 110 * (k + 2), seconds) for k, n in enumerate(names)], axis=0)[None]


def test_a_subset_separates_in_the_given_order_and_adds_up_to_the_mix(models):
  _, model, _ = models
  assert read_manifest(model)["source_names"] == list(CLASSES)
  sep = load_separator(model, FAST, sources=["saw", "low"])
  assert sep.source_names == ("saw", "low") and sep.num_sources == 2
  assert sep.describe()["encoder_sources"] == [2, 1]  # the amortised encoder's outputs for those classes
  mix = _mix(["saw", "low"])
  est = np.asarray(sep.separate(mix))
  assert est.shape == (1, 2, mix.shape[1]) and np.all(np.isfinite(est))
  np.testing.assert_allclose(est.sum(axis=1), mix, atol=2e-4)
  # The encoder's initial guess for the subset: its latents for those classes, its mass shares renormalised
  # over them (the gains of every frame add up to the frame's mass).
  x = tf.abs(tf.signal.stft(mix, 256, 64, pad_end=True)) + 1e-3
  mass = tf.reduce_sum(x, axis=-1)
  z, a = sep._encoder_init(x, mass, list(sep.priors.values()))  # pylint: disable=protected-access
  z_all, _, log_share = sep.encoder(x)
  np.testing.assert_allclose(z.numpy(), tf.gather(z_all, [2, 1], axis=1).numpy(), atol=1e-6)
  np.testing.assert_allclose(tf.reduce_logsumexp(a, axis=1).numpy(), np.log(mass.numpy()), atol=1e-4)
  shares = tf.gather(log_share, [2, 1], axis=1)
  expected = shares - tf.reduce_logsumexp(shares, axis=1, keepdims=True) + tf.math.log(mass)[:, None]
  np.testing.assert_allclose(a.numpy(), expected.numpy(), atol=1e-4)
  # All the classes in the model's order: exactly the model (no subset), and still a sum.
  full = load_separator(model, ONE_PASS)
  assert full.source_names == CLASSES and "encoder_sources" not in full.describe()
  np.testing.assert_allclose(np.asarray(full.separate(mix)).sum(axis=1), mix, atol=2e-4)


def test_an_added_class_starts_from_its_own_prior(models):
  _, model, bell = models
  sep = load_separator(model, ONE_PASS, sources=["low", "bell"], extra_priors={"bell": bell})
  assert sep.source_names == ("low", "bell") and sep.describe()["encoder_sources"] == [1, None]
  mix = _mix(["low", "bell"])
  np.testing.assert_allclose(np.asarray(sep.separate(mix)).sum(axis=1), mix, atol=2e-4)
  x = tf.abs(tf.signal.stft(mix, 256, 64, pad_end=True)) + 1e-3
  mass = tf.reduce_sum(x, axis=-1)
  z, a = sep._encoder_init(x, mass, list(sep.priors.values()))  # pylint: disable=protected-access
  np.testing.assert_allclose(z[:, 1].numpy(), sep.priors["bell"].encode(x)[0].numpy(), atol=1e-6)
  np.testing.assert_allclose(a[:, 1].numpy(), np.log(mass.numpy() / 2), atol=1e-4)  # an equal share: 1 / N
  np.testing.assert_allclose(tf.reduce_logsumexp(a, axis=1).numpy(), np.log(mass.numpy()), atol=1e-4)
  # No --sources: the model's classes, then the added one.
  assert load_separator(model, ONE_PASS, extra_priors={"bell": bell}).source_names == (*CLASSES, "bell")
  with pytest.raises(SourcesError, match="has priors for buzz, low, saw, none named 'bell'"):
    load_separator(model, sources=["bell"], extra_priors={"bell": os.path.join(model, "priors")})


def test_unknown_repeated_and_clashing_names_are_clear_errors(models):
  _, model, bell = models
  with pytest.raises(SourcesError, match=r"unknown source\(s\) \['piano'\]; available: buzz, low, saw$"):
    load_separator(model, sources=["low", "piano"])
  with pytest.raises(SourcesError, match=r"available: buzz, low, saw, bell$"):
    load_separator(model, sources=["piano"], extra_priors={"bell": bell})
  with pytest.raises(SourcesError, match=r"\['low'\] named more than once"):
    load_separator(model, sources=["low", "saw", "low"])
  with pytest.raises(SourcesError, match="already has a prior for that class"):
    load_separator(model, extra_priors={"low": bell})
  with pytest.raises(ValueError, match="expected name=DIR"):
    cli.parse_extra_priors(["bell"])


def test_nmf_subset_takes_those_dictionaries():
  rng = np.random.default_rng(0)
  dicts = rng.uniform(size=(3, 129, 4)).astype(np.float32)
  sep = NMFSeparator(dicts, CLASSES, SR, n_fft=256, hop=64, iterations=5)
  sub = sep.subset(["saw", "buzz"])
  assert sub.source_names == ("saw", "buzz")
  np.testing.assert_array_equal(sub.dictionaries, dicts[[2, 0]])
  mix = _mix(["saw", "buzz"], 0.25)
  np.testing.assert_allclose(np.asarray(sub.separate(mix)).sum(axis=1), mix, atol=2e-4)


def _run(*args, timeout=300):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="-1", PYTHONPATH=str(REPO))
  return subprocess.run([sys.executable, "-m", *map(str, args)], cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=timeout, check=False)


def _errors(stderr):
  return [line for line in stderr.splitlines() if "error:" in line]


def test_separate_cli_sources(models, tmp_path):
  _, model, _ = models
  song = tmp_path / "trio.wav"
  audio.write_audio(str(song), _mix(["saw", "low"], 1.0)[0], SR)
  out = tmp_path / "out"
  r = _run("vsep_tf.separate", f"--model_dir={model}", "--sources=saw,low", f"--input={song}", f"--output_dir={out}",
           "--model_override=--spectral_search.iterations=0")
  assert r.returncode == 0, r.stderr[-3000:]
  assert re.search(r"/\{saw,low\}\.wav", r.stdout), r.stdout
  assert sorted(os.listdir(out / "trio")) == ["low.wav", "saw.wav"]
  # An unknown class: one line naming the available ones, exit code 2, nothing written.
  r = _run("vsep_tf.separate", f"--model_dir={model}", "--sources=saw,piano", f"--input={song}",
           f"--output_dir={tmp_path / 'out2'}")
  assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
  assert _errors(r.stderr) == ["separate: error: --sources=saw,piano: unknown source(s) ['piano']; available: "
                               "buzz, low, saw"], r.stderr
  assert not (tmp_path / "out2").exists()


def test_evaluate_sources_scores_the_subset_and_the_spare_class(models, tmp_path):
  stems, model, _ = models
  result = tmp_path / "eval.json"
  r = _run("vsep_tf.evaluate", f"--model_dir={model}", "--dataset=stems", f"--data_root={stems}",
           "--sources=low,saw", "--model_sources=all", "--num_workers=0", f"--output_json={result}",
           "--model_override=--spectral_search.iterations=0")
  assert r.returncode == 0, r.stderr[-3000:]
  d = json.loads(result.read_text())
  assert d["source_names"] == ["low", "saw"] and set(d["sources"]) == {"low", "saw"} and d["num_tracks"] == 2
  assert d["separator_sources"] == list(CLASSES) and list(d["spare"]) == ["buzz"]
  assert np.isfinite(d["spare"]["buzz"]["energy_db_median"]) and len(d["spare"]["buzz"]["per_track"]) == 2
  assert "spare buzz (not in the mix)" in r.stdout
  # In process: the mixes are the sums of the chosen stems, and the separator has only their priors.
  opts = evaluate_lib.EvalOptions(dataset="stems", data_root=str(stems), sources=("saw", "low"), num_workers=0)
  dataset = evaluate_lib.build_dataset(opts)
  name, mix, sources = next(evaluate_lib.iter_tracks(dataset, opts))
  full = next(dataset.tracks("test"))[2]
  np.testing.assert_array_equal(sources, full[[2, 1]])
  np.testing.assert_allclose(mix, full[[2, 1]].sum(axis=0), atol=1e-6)
  r = evaluate_lib.evaluate(opts, model_dir=model, model_flags=["--spectral_search.iterations=0"], verbose=0)
  assert r["source_names"] == ["saw", "low"] and r["separator_sources"] == ["saw", "low"] and r["spare"] == {}
  assert name in r["tracks"]
  with pytest.raises(ValueError, match=r"unknown source\(s\) \['piano'\]; the data has buzz, low, saw"):
    evaluate_lib.evaluate(evaluate_lib.EvalOptions(dataset="stems", data_root=str(stems), sources=("piano",)),
                          model_dir=model, verbose=0)
