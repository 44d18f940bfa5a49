"""Separation scores (BSSEval v4 + SI-SDR), the oracle baselines, the evaluation CLI and the comparison tool."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vsep_tf.evaluation import bsseval
from vsep_tf.separators import oracle

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
RATE = 8000


def _sources(n=3, seconds=3.0, seed=0):
  """n distinct, non-silent test signals [n, T]: harmonic tones plus a little noise."""
  rng = np.random.default_rng(seed)
  t = np.arange(int(seconds * RATE)) / RATE
  out = []
  for k in range(n):
    f = 220.0 * 2.0 ** (4 * k / 12)  # a major triad: no shared harmonics among the first three
    x = sum(np.sin(2 * np.pi * f * h * t + rng.uniform(0, 6)) / h for h in range(1, 4))
    out.append(0.3 * x + 0.01 * rng.standard_normal(t.shape))
  return np.stack(out).astype(np.float64)


def test_perfect_estimate_scores_very_high():
  s = _sources()
  scores = bsseval.score_track(s, s.copy(), s.sum(0), RATE, ["a", "b", "c"])
  for name in "abc":
    assert scores[name]["sdr"] > 60 and scores[name]["sir"] > 60 and scores[name]["sar"] > 60
    assert scores[name]["si_sdr"] > 60  # eps-limited, float32 inside
    assert scores[name]["si_sdri"] > 50


@pytest.mark.parametrize("snr_db", [0.0, 10.0, 20.0])
def test_si_sdr_matches_a_known_snr(snr_db):
  s = _sources()
  rng = np.random.default_rng(1)
  noise = rng.standard_normal(s.shape)
  noise -= noise.mean(axis=1, keepdims=True)
  # scale the (zero-mean) noise to the wanted SNR against each zero-mean reference
  s0 = s - s.mean(axis=1, keepdims=True)
  noise *= np.sqrt((s0 ** 2).sum(1, keepdims=True) / (noise ** 2).sum(1, keepdims=True) / 10 ** (snr_db / 10))
  est = s + noise
  si = bsseval.si_sdr_scores(s, est, s.sum(0))["si_sdr"]
  # the noise is not exactly orthogonal to the reference: SI-SDR is within a few tenths of a dB of the SNR
  np.testing.assert_allclose(si, snr_db, atol=0.3)
  bss = bsseval.museval_scores(s, est, RATE)
  # BSSEval's SDR lets a 512-tap filter absorb some noise: a little above the SNR, never far
  assert np.all(bss["sdr"] > snr_db - 0.5) and np.all(bss["sdr"] < snr_db + 2.0)


def test_si_sdr_is_scale_invariant_and_improvement_is_relative_to_the_mix():
  s = _sources()
  mix = s.sum(0)
  a = bsseval.si_sdr_scores(s, 0.1 * s + 0.01 * mix, mix)
  b = bsseval.si_sdr_scores(s, 5.0 * (0.1 * s + 0.01 * mix), mix)
  np.testing.assert_allclose(a["si_sdr"], b["si_sdr"], atol=1e-3)
  as_mix = bsseval.si_sdr_scores(s, np.repeat(mix[None], 3, 0), mix)
  np.testing.assert_allclose(as_mix["si_sdri"], 0.0, atol=1e-6)


def test_silent_frames_are_left_out_of_the_median():
  s = _sources(seconds=4.0)
  s[1, :RATE] = 0.0  # source b rests for the first second: museval gives that frame NaN
  est = s + 0.05 * np.random.default_rng(2).standard_normal(s.shape)
  frames = bsseval.museval_frames(s, est, RATE)
  assert frames["sdr"].shape == (3, 4)
  assert np.isnan(frames["sdr"][:, 0]).all() and np.isfinite(frames["sdr"][:, 1:]).all()
  med = bsseval.museval_scores(s, est, RATE)["sdr"]
  np.testing.assert_allclose(med, np.median(frames["sdr"][:, 1:], axis=1))
  np.testing.assert_array_equal(bsseval.frame_median([[np.nan, np.nan]]), [np.nan])


def test_aggregate_medians_over_tracks_then_sources():
  tracks = [{"a": {"sdr": 1.0}, "b": {"sdr": 10.0}},
            {"a": {"sdr": 3.0}, "b": {"sdr": math.nan}},
            {"a": {"sdr": 2.0}, "b": {"sdr": 20.0}}]
  agg = bsseval.aggregate(tracks, ["a", "b"], metrics=["sdr"])
  assert agg["sources"]["a"]["sdr"] == 2.0 and agg["sources"]["b"]["sdr"] == 15.0  # NaN left out
  assert agg["overall"]["sdr"] == 8.5 and agg["overall_mean"]["sdr"] == 8.5
  assert bsseval.json_safe({"x": math.nan, "y": np.float32(1.5), "z": [np.int64(2)]}) == {"x": None, "y": 1.5,
                                                                                           "z": [2]}
  with pytest.raises(ValueError, match="no tracks"):
    bsseval.aggregate([], ["a"])


def test_bad_shapes_are_refused():
  s = _sources()
  with pytest.raises(ValueError, match="same shape"):
    bsseval.museval_scores(s, s[:, :-1], RATE)
  with pytest.raises(ValueError, match="finite"):
    bad = s.copy()
    bad[0, 5] = np.nan
    bsseval.si_sdr_scores(s, bad, s.sum(0))


def test_oracle_irm_recovers_the_sources_and_sums_to_the_mix():
  s = _sources().astype(np.float32)
  for mix_name, mix in (("sum", s.sum(0)), ("mean", s.mean(0))):
    sep = oracle.OracleIRM(["a", "b", "c"], RATE, mix_name, n_fft=1024, power=2.0)
    est = sep.separate_oracle(mix, s)
    assert est.shape == s.shape
    si = bsseval.si_sdr_scores(s, est, mix)["si_sdr"]
    si_mix = bsseval.si_sdr_scores(s, np.repeat(mix[None], 3, 0), mix)["si_sdr"]
    assert np.all(si > 15) and np.all(si > si_mix + 15), (si, si_mix)
    np.testing.assert_allclose(est.sum(0), s.sum(0), atol=1e-4)  # on the sources' scale, whatever the mix
    long = sep.separate_oracle_long(mix, s, chunk_length=8192)  # 3 cross-faded chunks
    np.testing.assert_allclose(bsseval.si_sdr_scores(s, long, mix)["si_sdr"], si, atol=0.5)
  with pytest.raises(TypeError, match="true sources"):
    sep.separate(mix[None])
  for mix_name, mix in (("sum", s.sum(0)), ("mean", s.mean(0))):  # m_sum / N whatever the convention
    base = oracle.MixtureBaseline(["a", "b", "c"], RATE, mix_name)
    np.testing.assert_allclose(np.asarray(base.separate(mix[None]))[0], np.repeat(s.mean(0)[None], 3, 0),
                               atol=1e-6)
    np.testing.assert_allclose(base.separate_long(mix), np.repeat(s.mean(0)[None], 3, 0), atol=1e-6)


def test_mixture_baseline_sdr_follows_the_equal_power_formula():
  rng = np.random.default_rng(3)
  s = rng.standard_normal((4, 3 * RATE))  # 4 independent equal-power sources
  est = oracle.MixtureBaseline(list("abcd"), RATE, "sum").separate_long(s.sum(0).astype(np.float32))
  sdr = bsseval.museval_scores(s, est, RATE)["sdr"]
  np.testing.assert_allclose(sdr, 10 * np.log10(4 / 3), atol=0.3)  # N / (N - 1), oracle module docstring


def _run(module, *args, timeout=120):
  return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True,
                        timeout=timeout, env=ENV)


@pytest.mark.slow  # two CLI processes, ~50 s; the default run has the evaluate CLI on a model directory
def test_cli_oracle_beats_mixture_on_toy(tmp_path):
  common = ["--dataset=toy", "--toy_seed=1234", "--num_examples=2", "--max_seconds=1.5"]
  irm, mix = tmp_path / "irm.json", tmp_path / "mix.json"
  proc = _run("vsep_tf.evaluate", "--method=oracle_irm", f"--output_json={irm}", "--num_workers=1", *common)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "overall" in proc.stdout and "sawtooth" in proc.stdout
  proc = _run("vsep_tf.evaluate", "--method=mixture", f"--output_json={mix}", "--num_workers=0",
              f"--write_audio_dir={tmp_path / 'audio'}", *common)
  assert proc.returncode == 0, proc.stderr[-3000:]
  r_irm, r_mix = json.loads(irm.read_text()), json.loads(mix.read_text())
  names = ["sine", "square", "sawtooth", "triangle"]
  for r, method in ((r_irm, "oracle_irm"), (r_mix, "mixture")):
    assert r["method"] == method and r["dataset"] == "toy" and r["num_tracks"] == 2 and r["model_dir"] is None
    assert list(r["sources"]) == names
    for name in names:
      assert set(r["sources"][name]) == {"sdr", "sir", "sar", "isr", "si_sdr", "si_sdri"}
    assert {"sdr", "si_sdr", "si_sdri"} <= set(r["overall"])
    assert r["overall"]["sdr"] == pytest.approx(np.median([r["sources"][n]["sdr"] for n in names]))
    assert r["audio_seconds"] == pytest.approx(3.0, abs=0.01)
    assert r["flags"]["toy_seed"] == 1234
  assert r_irm["separator"]["n_fft"] == 4096  # the toy default
  assert r_irm["overall"]["si_sdr"] > r_mix["overall"]["si_sdr"] + 15
  assert r_irm["overall"]["sdr"] > r_mix["overall"]["sdr"] + 10
  assert abs(r_mix["overall"]["si_sdri"]) < 1e-6
  tracks = sorted(p.name for p in (tmp_path / "irm.tracks").iterdir())
  assert tracks == ["item_00000.json", "item_00001.json"]
  per = json.loads((tmp_path / "irm.tracks" / "item_00000.json").read_text())
  assert per["track"] == "item_00000" and len(per["frames"]["sine"]["sdr"]) >= 1
  assert sorted(p.name for p in (tmp_path / "audio" / "item_00001").iterdir()) == sorted(f"{n}.wav" for n in names)


def test_library_evaluate_and_compare_tool(tmp_path):
  from vsep_tf import evaluate as evaluate_lib  # pylint: disable=import-outside-toplevel
  opts = evaluate_lib.EvalOptions(dataset="toy", toy_seed=7, num_examples=1, max_seconds=1.0,
                                  oracle_fft=1024, num_workers=1)
  paths = []
  for method in ("oracle_irm", "mixture"):
    r = evaluate_lib.evaluate(opts, method=method, verbose=0)
    assert r["num_tracks"] == 1 and r["separator"]["method"] == method
    paths.append(tmp_path / f"{method}.json")
    evaluate_lib.write_results(r, str(paths[-1]))
  md, png = tmp_path / "cmp.md", tmp_path / "cmp.png"
  proc = _run("tools.compare_separators", f"--results={paths[0]},{paths[1]}", f"--output_md={md}",
              f"--output_png={png}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  text = md.read_text()
  assert "| oracle_irm |" in text and "| mixture |" in text and "sine SI-SDR" in text and "overall SDR" in text
  assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("args, message", [
    (["--model_dir={tmp}/missing", "--dataset=toy"], "no such model directory"),
    (["--model_dir={tmp}", "--dataset=toy"], "no manifest.json"),
    (["--method=oracle_irm", "--dataset=nope"], "dataset"),
    (["--method=oracle_irm", "--dataset=stems", "--data_root={tmp}/empty"], "neither train/ nor test/"),
    (["--method=oracle_irm", "--dataset=stems"], "needs --data_root"),
    (["--method=mixture"], "--dataset is required"),
    (["--method=mixture", "--model_dir={tmp}", "--dataset=toy"], "exactly one"),
])
def test_cli_bad_input_fails_without_writing(tmp_path, args, message):
  (tmp_path / "empty").mkdir()
  out = tmp_path / "out.json"
  proc = _run("vsep_tf.evaluate", *[a.format(tmp=tmp_path) for a in args], f"--output_json={out}", timeout=60)
  assert proc.returncode != 0
  assert message in proc.stderr, proc.stderr[-2000:]
  assert not out.exists() and not (tmp_path / "out.tracks").exists()


def test_compare_tool_refuses_bad_input(tmp_path):
  proc = _run("tools.compare_separators", timeout=60)
  assert proc.returncode != 0 and "nothing to compare" in proc.stderr
  bad = tmp_path / "bad.json"
  bad.write_text("{}")
  proc = _run("tools.compare_separators", f"--results={bad}", f"--output_md={tmp_path / 'x.md'}", timeout=60)
  assert proc.returncode != 0 and "not a vsep_tf.evaluate result" in proc.stderr
  assert not (tmp_path / "x.md").exists()


def test_cli_refuses_an_unknown_model_flag(tmp_path):
  from vsep_tf import model_dir, run_flags  # pylint: disable=import-outside-toplevel
  model_dir.write_manifest(str(tmp_path), run_flags.parse_flags(["--dataset=toy", "--job=priors"]),
                           ["sine", "square", "sawtooth", "triangle"], 14700, "mean")
  out = tmp_path / "out.json"
  proc = _run("vsep_tf.evaluate", f"--model_dir={tmp_path}", "--model_override=--no_such_flag=3", "--num_examples=1",
              f"--output_json={out}", timeout=60)
  assert proc.returncode == 1 and "no_such_flag" in proc.stderr, proc.stderr[-2000:]
  assert not out.exists()


def test_spectral_tilt_is_a_linear_eq_per_octave():
  from vsep_tf import evaluate as evaluate_lib  # pylint: disable=import-outside-toplevel
  rate = 16000
  t = np.arange(rate) / rate
  tones = np.stack([np.sin(2 * np.pi * f * t) for f in (1000.0, 2000.0, 250.0)]).astype(np.float32)
  out = evaluate_lib.spectral_tilt(tones, rate, 3.0)
  gain_db = 20 * np.log10(np.abs(out).max(-1) / np.abs(tones).max(-1))
  np.testing.assert_allclose(gain_db, [0.0, 3.0, -6.0], atol=0.05)  # 0 / +1 / -2 octaves from 1 kHz
  np.testing.assert_allclose(evaluate_lib.spectral_tilt(tones.sum(0), rate, 3.0), out.sum(0), atol=1e-4)
  np.testing.assert_array_equal(evaluate_lib.spectral_tilt(tones, rate, 0.0).shape, tones.shape)
