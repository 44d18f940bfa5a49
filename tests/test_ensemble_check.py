"""tools.ensemble_check (research: an ensemble of spectral separators, measured and not shipped): its masks are
the members' average, its estimates add up to the mix, and it refuses members it cannot average."""
import os

import numpy as np
import pytest

from tools.ensemble_check import MaskEnsemble
from vsep_tf.model_dir import load_separator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHORALES = os.path.join(REPO, "pretrained", "chorales")

# A research check, not the product path: the slow lane (pytest -m slow), for the 12-minute default run.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def members():
  """The shipped chorale separator's one pass, and its priors' own fit (a few steps): two different members."""
  one_pass = load_separator(CHORALES, ["--spectral_search.phase_iterations=0"], quality="fast")
  fit = load_separator(os.path.join(CHORALES, "priors"), ["--spectral_search.iterations=5",
                                                          "--spectral_search.phase_iterations=0"])
  return one_pass, fit


def _mix(seconds=1.0, rate=16000):
  rng = np.random.default_rng(0)
  t = np.arange(int(seconds * rate)) / rate
  return (0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sign(np.sin(2 * np.pi * 147 * t))
          + 0.01 * rng.standard_normal(t.size)).astype(np.float32)[None]


def test_an_ensemble_of_one_member_twice_is_that_member(members):
  one_pass, _ = members
  mix = _mix()
  np.testing.assert_allclose(MaskEnsemble([one_pass, one_pass]).separate(mix), one_pass.separate(mix), atol=1e-5)


@pytest.mark.parametrize("combine", ["masks", "models"])
def test_two_members_average_and_add_up_to_the_mix(members, combine):
  one_pass, fit = members
  mix = _mix()
  a, b = np.asarray(one_pass.separate(mix)), np.asarray(fit.separate(mix))
  ens = np.asarray(MaskEnsemble([one_pass, fit], combine=combine).separate(mix))
  assert ens.shape == a.shape == (1, 4, mix.shape[-1])
  np.testing.assert_allclose(ens.sum(1), mix, atol=1e-3)
  assert np.abs(ens - a).max() > 1e-3 and np.abs(ens - b).max() > 1e-3
  if combine == "masks":  # masks average -> (without MISI) the masked STFTs, and so the estimates, average
    np.testing.assert_allclose(ens, (a + b) / 2, atol=1e-4)


def test_shifts_and_phase_rounds_keep_the_sum(members):
  one_pass, _ = members
  mix = _mix()
  ens = np.asarray(MaskEnsemble([one_pass], phase_iterations=2, shifts=2).separate(mix))
  np.testing.assert_allclose(ens.sum(1), mix, atol=1e-3)


def test_refuses_what_it_cannot_average(members):
  one_pass, _ = members
  with pytest.raises(ValueError, match="spectral separators"):
    MaskEnsemble([])
  with pytest.raises(ValueError, match="combine"):
    MaskEnsemble([one_pass], combine="median")
  band = load_separator(os.path.join(REPO, "pretrained", "band"), quality="fast")
  with pytest.raises(ValueError, match="share classes"):
    MaskEnsemble([one_pass, band])
