"""vsep_tf/config.py: the read-only Config mapping, its typed overrides, flagfile text and atomic writes; and
run_flags' Config of the CLI flags. (tests/test_configs.py checks the flagfiles of configs/.)"""
import os

import pytest

from vsep_tf import config as config_lib
from vsep_tf import registry
from vsep_tf import run_flags

BASE = {"job": "priors", "train_steps": 10, "learning_rate": 1e-3, "musdb_is_wav": True, "elbo_prior_noise": False,
        "mix": "", "worker_hosts": ["a:1"], "spectral.n_fft": 1024, "sample_rate": 0}


def test_config_is_a_read_only_mapping_with_attribute_access():
  cfg = config_lib.Config(BASE)
  assert cfg.job == "priors" and cfg["spectral.n_fft"] == 1024 and len(cfg) == len(BASE)
  assert dict(cfg) == BASE and cfg.to_dict() == BASE and cfg.to_dict() is not cfg.to_dict()
  assert "job" in cfg and "nope" not in cfg and cfg.get("nope", 3) == 3
  with pytest.raises(AttributeError, match="no setting 'nope'"):
    cfg.nope  # pylint: disable=pointless-statement
  with pytest.raises(KeyError):
    cfg["nope"]  # pylint: disable=pointless-statement
  with pytest.raises(AttributeError, match="read-only"):
    cfg.job = "nmf"
  with pytest.raises(TypeError):
    cfg["job"] = "nmf"  # pylint: disable=unsupported-assignment-operation
  values = dict(BASE)
  cfg = config_lib.Config(values)
  values["job"] = "nmf"  # the Config holds its own copy
  assert cfg.job == "priors"
  cfg.to_dict()["job"] = "nmf"
  assert cfg.job == "priors"


def test_replace_returns_a_new_config_and_rejects_unknown_names():
  cfg = config_lib.Config(BASE)
  new = cfg.replace(train_steps=20, **{"spectral.n_fft": 2048})
  assert new.train_steps == 20 and new["spectral.n_fft"] == 2048 and isinstance(new, config_lib.Config)
  assert cfg.train_steps == 10 and cfg["spectral.n_fft"] == 1024  # unchanged
  with pytest.raises(KeyError, match="unknown settings"):
    cfg.replace(trian_steps=20)


def test_overrides_are_typed_like_the_setting_they_replace():
  cfg = config_lib.Config(BASE).with_overrides([
      "--train_steps=7", "--learning_rate=2e-3", "--musdb_is_wav=false", "--elbo_prior_noise", "--mix=sum",
      "--worker_hosts=h:1,h:2", "--spectral.n_fft=512", "--sample_rate=16000"])
  assert cfg.train_steps == 7 and type(cfg.train_steps) is int  # pylint: disable=unidiomatic-typecheck
  assert cfg.learning_rate == 2e-3 and isinstance(cfg.learning_rate, float)
  assert cfg.musdb_is_wav is False and cfg.elbo_prior_noise is True
  assert cfg.mix == "sum" and cfg.worker_hosts == ["h:1", "h:2"] and cfg["spectral.n_fft"] == 512
  assert config_lib.Config(BASE).with_overrides(["--nomusdb_is_wav"]).musdb_is_wav is False
  assert config_lib.Config(BASE).with_overrides(["--learning_rate=1"]).learning_rate == 1.0
  assert config_lib.Config(BASE).with_overrides([]) == config_lib.Config(BASE)


@pytest.mark.parametrize("item, message", [
    ("--no_such_setting=3", "unknown setting 'no_such_setting'"),
    ("--train_steps=many", "invalid literal"),
    ("--musdb_is_wav=maybe", "not a boolean"),
    ("--train_steps", "no boolean setting"),
    ("--nojob", "no boolean setting"),
    ("train_steps=3", "must look like --name=value"),
])
def test_bad_overrides_are_refused(item, message):
  with pytest.raises(ValueError, match=message):
    config_lib.Config(BASE).with_overrides([item])


def test_flagfile_text_round_trips_through_the_cli_parser(tmp_path):
  cfg = run_flags.parse_flags(["--job=nmf", "--train_steps=3", "--worker_hosts=a:1,b:2", "--nomusdb_is_wav",
                               "--spectral.n_fft=512", "--model_dir=/tmp/m"])
  text = config_lib.flagfile_text(cfg)
  assert "--job=nmf\n" in text and "--nomusdb_is_wav\n" in text and "--worker_hosts=a:1,b:2\n" in text
  assert "--data_root" not in text  # None values are left out
  names = [line[2:].split("=")[0] for line in text.splitlines()]
  names = [n[2:] if n[2:] in cfg and isinstance(cfg[n[2:]], bool) and n not in cfg else n for n in names]
  assert names == sorted(names) and set(names) == {k for k, v in cfg.items() if v is not None}
  path = tmp_path / "run.flags"
  config_lib.atomic_write_text(str(path), text)
  assert run_flags.parse_flags([f"--flagfile={path}"]) == cfg


def test_atomic_write_leaves_no_temporary_and_keeps_the_old_file_on_error(tmp_path, monkeypatch):
  path = tmp_path / "deep" / "file.txt"
  config_lib.atomic_write_text(str(path), "one\n")
  config_lib.atomic_write_text(str(path), "two\n")
  assert path.read_text() == "two\n" and os.listdir(path.parent) == ["file.txt"]

  def fail(*args):
    raise OSError("disk full")

  monkeypatch.setattr(config_lib.os, "replace", fail)  # the write fails after the temporary file is written
  with pytest.raises(OSError, match="disk full"):
    config_lib.atomic_write_text(str(path), "three\n")
  assert path.read_text() == "two\n" and os.listdir(path.parent) == ["file.txt"]


def test_cli_config_holds_every_project_flag_and_the_family_hyperparameters():
  cfg = run_flags.parse_flags([])
  assert sorted(cfg) == run_flags.project_flag_names()
  assert cfg.job == "spectral_separator"  # the default job: the recipe that works
  for family in registry.FAMILIES:
    for name, default in registry.family_defaults(family).items():
      assert name in cfg, name
      assert cfg[name] == (list(map(str, default)) if isinstance(default, tuple) else default), name
  kwargs = registry.factory_kwargs(cfg.replace(**{"spectral.n_fft": 256}), "spectral")
  assert kwargs["n_fft"] == 256 and set(kwargs) == {k.split(".", 1)[1] for k in registry.family_defaults("spectral")}
  with pytest.raises(Exception, match="no_such_flag"):
    run_flags.parse_flags(["--no_such_flag=1"])
