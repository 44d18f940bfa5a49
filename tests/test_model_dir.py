"""Model directories (vsep_tf/model_dir.py): the manifest a training run writes, what read_manifest refuses and
how it says so, load_config's overrides, and restore_priors."""
import json
import shutil

import pytest

from vsep_tf import model_dir as model_dir_lib
from vsep_tf import run_flags
from vsep_tf.model_dir import MANIFEST_FILENAME, ModelDirError, load_config, load_separator, read_manifest

TOY = ("sine", "square", "sawtooth", "triangle")


def test_training_writes_the_manifest(tiny_priors_dir):
  manifest = read_manifest(tiny_priors_dir)
  assert manifest["format"] == "vsep-tf model" and manifest["version"] == 1
  assert manifest["separator"] == "langevin" and manifest["components"] == {}
  assert tuple(manifest["source_names"]) == TOY and manifest["sample_rate"] == 14700 and manifest["mix"] == "mean"
  settings = manifest["settings"]
  assert settings["job"] == "priors" and settings["prior"] == "wavenet" and settings["dataset"] == "toy"
  assert settings["wavenet.residual_channels"] == 8 and settings["train_steps"] == 2  # the run's own values
  assert "periodic.sweeps" in settings  # the search a --job=priors directory may be switched to
  # Never paths, cluster or debugging settings, nor the hyperparameters of families the model does not use.
  for name in ("model_dir", "data_root", "musdb_root", "prior_dir", "worker_hosts", "strategy", "debug_nan_at_step"):
    assert name not in settings, name
  assert not [k for k in settings if k.split(".")[0] in ("encoder", "spectral", "nmf", "score", "flow")]
  assert model_dir_lib.is_model_dir(tiny_priors_dir)
  # load_config: the settings as a Config, with typed overrides; an unknown name is a ModelDirError.
  cfg = load_config(tiny_priors_dir, ["--langevin_levels=3"])
  assert cfg.langevin_levels == 3 and cfg.job == "priors"
  with pytest.raises(ModelDirError, match="unknown setting 'no_such_setting'"):
    load_config(tiny_priors_dir, ["--no_such_setting=1"])
  with pytest.raises(ModelDirError, match="unknown setting 'model_dir'"):  # not a model setting
    load_config(tiny_priors_dir, ["--model_dir=x"])
  priors, prior_cfg = model_dir_lib.restore_priors(tiny_priors_dir)
  assert tuple(priors) == TOY and prior_cfg.prior == "wavenet"
  # The run's flagfile (vsep_tf.train writes it next to the manifest) reproduces the run, data paths included.
  assert run_flags.load_run_config(tiny_priors_dir).model_dir == tiny_priors_dir


def test_manifest_of_a_separator_run(tiny_supervised_dir):
  manifest = read_manifest(tiny_supervised_dir)
  assert manifest["separator"] == "encoder" and manifest["settings"]["job"] == "supervised"
  assert manifest["settings"]["encoder.residual_channels"] == 8
  assert not [k for k in manifest["settings"] if k.startswith(("wavenet.", "periodic."))]


def _write(path, manifest):
  path.mkdir(parents=True, exist_ok=True)
  (path / MANIFEST_FILENAME).write_text(json.dumps(manifest) if isinstance(manifest, dict) else manifest)
  return str(path)


def test_read_manifest_errors_say_what_is_wrong(tmp_path, tiny_priors_dir):
  good = read_manifest(tiny_priors_dir)
  with pytest.raises(ModelDirError, match="no such model directory"):
    read_manifest(str(tmp_path / "missing"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(ModelDirError, match="not a vsep-tf model directory"):
    read_manifest(str(tmp_path / "empty"))
  assert not model_dir_lib.is_model_dir(str(tmp_path / "empty"))
  # An older directory (config.flags only): the error names the tool that writes its manifest.
  legacy = tmp_path / "legacy"
  shutil.copytree(tiny_priors_dir, legacy)
  (legacy / MANIFEST_FILENAME).unlink()
  assert model_dir_lib.is_model_dir(str(legacy))
  with pytest.raises(ModelDirError, match=r"older vsep-tf.*python -m tools\.ship_model --model_dir="):
    read_manifest(str(legacy))
  with pytest.raises(ModelDirError, match="tools.ship_model"):
    load_separator(str(legacy))
  with pytest.raises(ModelDirError, match=r"manifest version 2; this vsep-tf reads version 1"):
    read_manifest(_write(tmp_path / "v2", {**good, "version": 2}))
  with pytest.raises(ModelDirError, match="manifest version None"):
    read_manifest(_write(tmp_path / "v0", {k: v for k, v in good.items() if k != "version"}))
  with pytest.raises(ModelDirError, match="not a vsep-tf manifest"):
    read_manifest(_write(tmp_path / "other", {**good, "format": "something else"}))
  with pytest.raises(ModelDirError, match="not a vsep-tf manifest"):
    read_manifest(_write(tmp_path / "list", "[1, 2]"))
  with pytest.raises(ModelDirError, match="unreadable manifest"):
    read_manifest(_write(tmp_path / "broken", '{"format": "vsep-tf model", '))
  with pytest.raises(ModelDirError, match=r"lacks \['settings'\]"):
    read_manifest(_write(tmp_path / "short", {k: v for k, v in good.items() if k != "settings"}))
  assert issubclass(ModelDirError, ValueError)  # callers that catch ValueError keep working


def test_a_component_that_is_not_there_is_named(tmp_path, tiny_priors_dir):
  good = read_manifest(tiny_priors_dir)
  path = _write(tmp_path / "enc", {**good, "separator": "spectral_encoder", "components": {},
                                   "settings": {**good["settings"], "job": "spectral_encoder"}})
  with pytest.raises(ModelDirError, match="names no 'priors' component"):
    load_separator(path)
