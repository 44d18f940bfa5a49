"""Golden regression tests of the shipped models (pretrained/): each loads from a COPY of its directory in a
temporary folder, with the working directory moved where no ../shared is in reach (a shipped model needs nothing
but its folder), and separates a short fixed input exactly as stored in tests/golden/<model>.npz.

The .npz files hold the input and the output (tools/make_golden.py writes them; rerun it only when an output is
meant to change). Tolerance, measured: run to run on this machine the outputs are bit-identical; with another
float computation order (TF_ENABLE_ONEDNN_OPTS=0) they move by at most 6e-6 (chorales; band: 2e-7; toy: 0); the
smallest real changes tried move them by 6.8e-4 (chorales: 299 instead of 300 MAP iterations), 3.0e-4 (band: the
same) and 9e-4 (toy: 29 instead of 30 sweeps of the periodic search). ATOL = 5e-5 sits well between the two.
"""
import os
import shutil

import numpy as np
import pytest

from tools import make_golden
from vsep_tf.model_dir import load_separator, read_manifest

ATOL = 5e-5  # absolute (signals in [-1, 1]); see the module docstring
RTOL = 0.0


def test_every_shipped_model_has_a_small_golden_file():
  shipped = sorted(d for d in os.listdir(make_golden.PRETRAINED)
                   if os.path.isdir(os.path.join(make_golden.PRETRAINED, d)))
  assert shipped == sorted(make_golden.GOLDEN), "a shipped model without a golden output: add it to tools/make_golden"
  total = 0
  for model in shipped:
    path = make_golden.golden_path(model)
    assert os.path.isfile(path), f"{path} missing: python -m tools.make_golden --models={model}"
    total += os.path.getsize(path)
  assert total < 1 << 20, total


def test_golden_inputs_are_what_the_tool_generates():
  for model in make_golden.GOLDEN:
    with np.load(make_golden.golden_path(model)) as z:
      np.testing.assert_array_equal(z["input"], make_golden.golden_input(model))


@pytest.mark.parametrize("model", sorted(make_golden.GOLDEN))
def test_shipped_model_from_a_copy_anywhere_reproduces_its_golden_output(model, tmp_path, monkeypatch):
  copy = tmp_path / "copied" / model
  shutil.copytree(os.path.join(make_golden.PRETRAINED, model), copy)
  elsewhere = tmp_path / "cwd" / "deeper"
  elsewhere.mkdir(parents=True)
  monkeypatch.chdir(elsewhere)
  assert not (elsewhere.parent / "shared").exists() and not (elsewhere / "pretrained").exists()
  with np.load(make_golden.golden_path(model)) as z:
    x, expected = z["input"], z["output"]
  sep = load_separator(os.path.relpath(copy, elsewhere))
  manifest = read_manifest(str(copy))
  assert sep.source_names == tuple(manifest["source_names"]) and sep.sample_rate == manifest["sample_rate"]
  assert sep.mix == manifest["mix"]
  est = np.asarray(sep.separate(x[None]))[0]
  assert est.shape == (len(sep.source_names), x.shape[0]) and np.isfinite(est).all()
  mixed = est.sum(0) if sep.mix == "sum" else est.mean(0)
  np.testing.assert_allclose(mixed, x, atol=1e-3)  # mixture-consistent
  np.testing.assert_allclose(est, expected, rtol=RTOL, atol=ATOL,
                             err_msg=f"{model}: output changed (intended? python -m tools.make_golden --models={model})")
