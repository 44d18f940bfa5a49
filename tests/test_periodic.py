"""The periodic-component search (vsep_tf/separators/periodic.py): class-agnostic decomposition into steady tones,
assignment by the priors' energy, and its errors; and the harmonic-comb check for the toy (tools/harmonic_check)."""
import itertools
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from vsep_tf import signal as signal_lib
from vsep_tf.data.toy import ToyData
from vsep_tf.model_dir import load_separator
from vsep_tf.separators import periodic

REPO = Path(__file__).resolve().parents[1]
SHIPPED_TOY_PRIORS = REPO / "pretrained" / "toy_score"


def best_permutation_si_sdr(sources, estimates):
  """SI-SDR [N] of each true source against the estimate matched to it by the best permutation (the truth)."""
  n = len(sources)
  grid = signal_lib.si_sdr(np.repeat(sources[:, None], n, 1), np.repeat(estimates[None], n, 0)).numpy()
  best = max(itertools.permutations(range(n)), key=lambda p: sum(grid[k, p[k]] for k in range(n)))
  return np.array([grid[k, best[k]] for k in range(n)]), best


def test_spectral_peaks_find_tones_strongest_first_and_respect_exclusions():
  rate, t = 8000, np.arange(16000) / 8000
  x = 1.0 * np.sin(2 * np.pi * 317.3 * t) + 0.5 * np.sin(2 * np.pi * 110.05 * t + 1.0)
  peaks = periodic.spectral_peaks(x, rate, 2)
  np.testing.assert_allclose(peaks, [317.3, 110.05], atol=0.02)
  only = periodic.spectral_peaks(x, rate, 1, exclude=[317.2])
  assert abs(only[0] - 110.05) < 0.02  # the excluded tone is not offered again


def test_fold_recovers_an_exact_periodic_signal_and_caps_bins_by_period():
  rate, f = 14700, 123.456
  u = np.mod(f * np.arange(20000) / rate, 1.0)
  x = np.where(u < 0.5, 1.0, -1.0)  # a square wave
  m = periodic.num_bins(f, rate, 2048, 4.0)
  assert m == round(4 * rate / f)  # capped at 4 x samples per period
  fit, explained = periodic.fold(x, periodic.cycle_bins(f, len(x), rate, m), m)
  assert signal_lib.si_sdr(x[None].astype(np.float32), fit[None].astype(np.float32)).numpy()[0] > 20.0
  assert explained == pytest.approx(np.sum(fit ** 2))


@pytest.mark.slow  # research path (not the product's): the slow lane (pytest -m slow), for the 12-minute default run
def test_decomposition_splits_toy_mixes_into_their_tones_without_class_knowledge():
  data = ToyData(seed=4321, item_length=16384)
  decompose = periodic.PeriodicDecomposition(data.sample_rate)
  scores, freq_err = [], []
  for i, (_, mix, sources) in enumerate(data.tracks("test", limit=3)):
    comps, freqs = decompose(mix, 4)
    sdr, match = best_permutation_si_sdr(sources, 4.0 * comps)  # mean mix: a component is a source / 4
    true_f = data.parameters("test", [i])["frequency"][0]
    freq_err.append(np.abs(freqs[list(match)] - true_f))
    scores.append(sdr)
    assert np.sum((mix - comps.sum(0)) ** 2) < 0.03 * np.sum(mix ** 2)  # the components explain the mix
  assert np.median(scores) > 20.0, np.round(scores, 1)
  assert np.median(freq_err) < 0.01, freq_err


class EnergyTable:
  """Test stand-in for a score prior: its 'energy' of a candidate is a fixed number per candidate row."""

  def __init__(self, row):
    self.row = np.asarray(row, np.float32)

  def denoising_energy(self, x, sigmas, seed):
    del sigmas, seed
    return tf.constant(self.row[: x.shape[0]])


def test_assignment_is_the_permutation_of_least_total_energy():
  rng = np.random.default_rng(0)
  cost = rng.uniform(0, 10, [4, 4])
  sep = periodic.PeriodicSeparator({f"c{k}": EnergyTable(cost[k]) for k in range(4)}, 8000, "sum")
  order = sep.assign(np.zeros([4, 64]))
  brute = min(itertools.permutations(range(4)), key=lambda p: sum(cost[k, p[k]] for k in range(4)))
  assert tuple(order) == brute


@pytest.mark.slow  # research path (not the product's): the slow lane (pytest -m slow), for the 12-minute default run
@pytest.mark.skipif(not SHIPPED_TOY_PRIORS.is_dir(), reason="pretrained/toy_score not present")
def test_shipped_toy_priors_name_the_tones():
  """End to end with the shipped score priors on unseen items: each class gets its own tone back."""
  sep = load_separator(str(SHIPPED_TOY_PRIORS))  # pretrained/toy_score separates by the periodic search
  assert isinstance(sep, periodic.PeriodicSeparator)
  data = ToyData(seed=4321, item_length=16384)
  mixes, refs = zip(*[(m, s) for _, m, s in data.tracks("test", limit=2)])
  est = sep.separate(np.stack(mixes)).numpy()
  sdr = signal_lib.si_sdr(np.stack(refs), est).numpy()
  assert np.median(sdr) > 15.0, np.round(sdr, 1)
  np.testing.assert_allclose(np.mean(est, axis=1), np.stack(mixes), atol=1e-4)  # mixture-consistent (mean)
  assert sep.last_frequencies.shape == (2, 4)


def test_periodic_search_errors(tiny_priors_dir):
  decompose = periodic.PeriodicDecomposition(8000)
  with pytest.raises(ValueError, match="non-finite"):
    decompose(np.array([0.0, np.nan] * 100), 2)
  with pytest.raises(ValueError, match="mono"):
    decompose(np.zeros([2, 100]), 2)
  comps, freqs = decompose(np.zeros(4000), 3)  # silence: nothing to claim, nothing invented
  assert not comps.any() and not freqs.any()
  with pytest.raises(ValueError, match="denoising energy"):  # WaveNet priors have no energy to assign with
    load_separator(tiny_priors_dir, ["--priors_search=periodic"])


def test_periodic_directories_refuse_export_with_a_pointer(tiny_priors_dir):
  from vsep_tf.export import saved_model  # pylint: disable=import-outside-toplevel
  with pytest.raises(ValueError, match="no TensorFlow graph to export"):
    saved_model.load_for_export(tiny_priors_dir, ["--priors_search=periodic"])
  assert saved_model.load_for_export(tiny_priors_dir).method == "langevin"  # the default is unchanged


@pytest.mark.slow  # research path (not the product's): the slow lane (pytest -m slow), for the 12-minute default run
def test_periodic_check_splits_failures_into_decomposition_and_naming(tmp_path, tiny_priors_dir):
  """tools/periodic_check on one short held-out item with the shipped priors: the truth's naming bounds the priors'
  (best summed SI-SDR), the counts are consistent, and priors without an energy are refused with no output."""
  import json  # pylint: disable=import-outside-toplevel
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  if not SHIPPED_TOY_PRIORS.is_dir():
    pytest.skip("pretrained/toy_score not present")
  out = tmp_path / "check.json"
  cmd = [sys.executable, "-m", "tools.periodic_check", "--num_examples=1", "--length=8192", f"--output_json={out}"]
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  report = json.loads(out.read_text())
  (item,) = report["per_item"]
  assert sum(item["priors_named"]) <= sum(item["truth_named"]) + 1e-6
  if item["same_naming"]:
    assert item["priors_named"] == item["truth_named"]
  assert 0 <= item["tones_found"] <= 4 and len(item["frequencies"]) == 4
  summary = report["summary"]
  assert summary["same_naming_where_decomposition_good"] <= summary["items_all_good"]["truth_named"] <= 1
  bad = tmp_path / "bad.json"
  proc = subprocess.run([*cmd[:3], f"--model_dir={tiny_priors_dir}", f"--output_json={bad}"], cwd=REPO,
                        capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode != 0 and "denoising energy" in proc.stderr and not bad.exists()


@pytest.mark.slow  # research path (not the product's): the slow lane (pytest -m slow), for the 12-minute default run
def test_harmonic_check_combs_at_the_true_pitches_separate_and_the_encoder_reads_a_pitch(tmp_path):
  """tools/harmonic_check (the toy by harmonic-comb priors, research) on one short held-out item after 3 training
  steps: the combs at the TRUE pitches separate every class (the frame model is right: 20.4 / 18.0 / 13.6 / 17.8 dB
  measured at 50 harmonics), the encoder gives a pitch per class and frame inside the grid, and the JSON is whole."""
  import json  # pylint: disable=import-outside-toplevel
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  out = tmp_path / "harmonic.json"
  cmd = [sys.executable, "-m", "tools.harmonic_check", "--steps=3", "--num_examples=1", "--length=8192",
         "--harmonics=50", "--fit_steps=4", f"--output_json={out}"]
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  report = json.loads(out.read_text())
  assert report["classes"] == ["sine", "square", "sawtooth", "triangle"]
  assert set(report["median"]) == {"oracle_pitch", "encoder", "encoder_fit", "encoder_item_median", "encoder_medfilt5",
                                   "medfilt5_refine", "pitch_error_semitones", "refine_error"}
  assert min(report["median"]["oracle_pitch"].values()) > 10.0
  (errors,) = report["per_item"]["pitch_error_semitones"]
  assert len(errors) == 4 and all(0.0 <= e <= 66.0 for e in errors)
