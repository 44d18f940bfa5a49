r"""Copy a trained model directory into a small self-contained one (pretrained/...): manifest.json, the LATEST
checkpoint only, its components (a spectral_encoder's or harmonic separator's priors, shipped the same way into
<output_dir>/priors),
the TensorBoard training logs and an optional text log. No config.flags: the manifest is all that
`load_separator`, `vsep_tf.evaluate`, `vsep_tf.separate` and the exporters need, from any folder.

  python -m tools.ship_model --model_dir=runs/chorales --output_dir=pretrained/chorales --weights_only \
      --log=runs/chorales.log

An older directory (config.flags, no manifest.json) gets its manifest here: its source names, rate and mix
are read from its training data, so run this where that data is reachable (e.g. the repository root for
`--data_root=../shared/data/chorales`); a relative --prior_dir is looked up in the model directory first.
--set=NAME=VALUE changes one setting of the shipped manifest (e.g. --set=spectral_search.iterations=0).
--weights_only ships the weights and the step without the optimizer state (a third of the size; training
resumed from the copy restarts Adam's moments). Nothing is half-written: the copy is assembled in a temporary
sibling directory and renamed into place.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "Trained model directory (vsep_tf.train).", required=True)
flags.DEFINE_string("output_dir", None, "Where the shippable copy goes (replaced if it exists).", required=True)
flags.DEFINE_multi_string("set", [], "NAME=VALUE: change one setting of the shipped manifest.")
flags.DEFINE_string("log", None, "A text training log to ship as train.log.")
flags.DEFINE_boolean("weights_only", False, "Ship the weights and step without the optimizer state.")


def manifest_of(model_dir: str) -> dict:
  """The manifest of `model_dir`; for an older directory (config.flags only), one made from its run config and
  its data set, with a 'components' entry for a spectral_encoder's --prior_dir (an absolute path)."""
  from vsep_tf import model_dir as model_dir_lib  # pylint: disable=import-outside-toplevel
  from vsep_tf import registry, run_flags  # pylint: disable=import-outside-toplevel
  if os.path.isfile(os.path.join(model_dir, model_dir_lib.MANIFEST_FILENAME)):
    manifest = model_dir_lib.read_manifest(model_dir)
    manifest["settings"] = model_dir_lib.manifest_settings(manifest["settings"])  # this version's selection
    return manifest
  cfg = run_flags.load_run_config(model_dir)
  data = registry.dataset_from_config(cfg)
  components = {}
  if cfg.job == "spectral_encoder":
    prior_dir = cfg.prior_dir
    if not os.path.isabs(prior_dir) and os.path.isdir(os.path.join(model_dir, prior_dir)):
      prior_dir = os.path.join(model_dir, prior_dir)
    components[model_dir_lib.PRIORS_SUBDIR] = os.path.abspath(prior_dir)
  with tempfile.TemporaryDirectory() as tmp:  # write_manifest is the one place a manifest is made
    manifest = model_dir_lib.write_manifest(tmp, cfg, data.source_names, data.sample_rate, data.mix)
  manifest["components"] = components
  return manifest


def write_weights_only(trackables: dict, prefix: str, out_dir: str):
  """Writes `trackables` (restored from checkpoint `prefix`) and its step to `out_dir`, no optimizer state.
  The object keys are the trainer's, so load_separator and a resumed trainer read it."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  reader = tf.train.load_checkpoint(prefix)
  key = "step/.ATTRIBUTES/VARIABLE_VALUE"  # fitted (not trained) priors have none: their checkpoint's number
  step = tf.Variable(reader.get_tensor(key) if reader.has_tensor(key) else int(prefix.rsplit("-", 1)[1]),
                     dtype=tf.int64, name="step")
  tf.train.CheckpointManager(tf.train.Checkpoint(step=step, **trackables), out_dir, max_to_keep=1).save(
      checkpoint_number=int(step.numpy()))


def trained_objects(model_dir: str, manifest: dict, tmp: str) -> dict:
  """{checkpoint key: restored object} of a spectral, spectral_encoder, harmonic_priors or harmonic model (for
  --weights_only)."""
  from vsep_tf import config as config_lib  # pylint: disable=import-outside-toplevel
  from vsep_tf import model_dir as model_dir_lib  # pylint: disable=import-outside-toplevel
  from vsep_tf import registry  # pylint: disable=import-outside-toplevel
  from vsep_tf.priors.spectral import build_spectral_prior  # pylint: disable=import-outside-toplevel
  from vsep_tf.separators.harmonic import PitchEncoder  # pylint: disable=import-outside-toplevel
  from vsep_tf.separators.spectral import SpectralEncoder  # pylint: disable=import-outside-toplevel
  settings = config_lib.Config(manifest["settings"])
  if manifest["separator"] == "spectral":
    kwargs = registry.factory_kwargs(settings, "spectral")
    priors = {name: build_spectral_prior(**kwargs) for name in manifest["source_names"]}
    model_dir_lib.restore(model_dir, priors=priors)
    return {"priors": priors}
  if manifest["separator"] == "harmonic_priors":
    return {"priors": model_dir_lib.restore_harmonic_priors(model_dir)}
  encoders = {  # kind of model: (its priors' restore, its encoder, the encoder's registry family)
      "spectral_encoder": (model_dir_lib.restore_spectral_priors, SpectralEncoder, "spectral_encoder"),
      "harmonic": (model_dir_lib.restore_harmonic_priors, PitchEncoder, "harmonic_encoder")}
  if manifest["separator"] in encoders:
    restore_priors, encoder_class, family = encoders[manifest["separator"]]
    priors = restore_priors(os.path.join(tmp, model_dir_lib.PRIORS_SUBDIR))
    encoder = encoder_class.for_priors(priors, **registry.factory_kwargs(settings, family))
    model_dir_lib.restore(model_dir, encoder=encoder)
    return {"encoder": encoder}
  raise ValueError(f"--weights_only supports spectral, spectral_encoder, harmonic_priors and harmonic models; "
                   f"{model_dir} is {manifest['separator']}")


def _assemble(model_dir: str, tmp: str, overrides=(), log=None, weights_only: bool = False) -> str:
  """Writes the shippable copy of `model_dir` into the empty folder `tmp`; returns the checkpoint shipped."""
  from vsep_tf import config as config_lib  # pylint: disable=import-outside-toplevel
  from vsep_tf import model_dir as model_dir_lib  # pylint: disable=import-outside-toplevel
  manifest = manifest_of(model_dir)
  for item in overrides:
    name, sep, value = item.partition("=")
    if not name or not sep:
      raise ValueError(f"--set needs NAME=VALUE, got {item!r}")
    # a setting this version has and an older manifest lacks (a family's newer hyperparameter) can be set too
    changed = model_dir_lib.settings_config(manifest["settings"]).with_overrides([f"--{name}={value}"])
    manifest["settings"][name] = changed[name]  # the manifest is written with sorted keys
  for name, path in manifest.get("components", {}).items():
    source = path if os.path.isabs(path) else os.path.join(model_dir, path)
    os.makedirs(os.path.join(tmp, name))
    _assemble(source, os.path.join(tmp, name), weights_only=weights_only)
    manifest["components"][name] = name
  if os.path.isfile(os.path.join(model_dir, "nmf.npz")):  # an NMF model is one self-contained file
    prefix = os.path.join(model_dir, "nmf.npz")
    shutil.copy2(prefix, os.path.join(tmp, "nmf.npz"))
  else:
    prefix = model_dir_lib.latest_checkpoint(model_dir)
    os.makedirs(os.path.join(tmp, "checkpoints"))
    base = os.path.basename(prefix)
    if weights_only:
      write_weights_only(trained_objects(model_dir, manifest, tmp), prefix, os.path.join(tmp, "checkpoints"))
    else:
      for name in os.listdir(os.path.dirname(prefix)):
        if name.startswith(base + "."):
          shutil.copy2(os.path.join(os.path.dirname(prefix), name), os.path.join(tmp, "checkpoints", name))
      with open(os.path.join(tmp, "checkpoints", "checkpoint"), "w", encoding="utf-8") as f:
        f.write(f'model_checkpoint_path: "{base}"\nall_model_checkpoint_paths: "{base}"\n')
  config_lib.atomic_write_text(os.path.join(tmp, model_dir_lib.MANIFEST_FILENAME),
                               json.dumps(manifest, indent=1, sort_keys=True) + "\n")
  if os.path.isdir(os.path.join(model_dir, "train")):
    shutil.copytree(os.path.join(model_dir, "train"), os.path.join(tmp, "train"))
  for text_log in ([log] if log else []) + [os.path.join(model_dir, "train.log")]:
    if os.path.isfile(text_log) and not os.path.exists(os.path.join(tmp, "train.log")):
      shutil.copy2(text_log, os.path.join(tmp, "train.log"))
  return prefix


def ship(model_dir: str, output_dir: str, overrides=(), log=None, weights_only: bool = False) -> str:
  """Writes the self-contained copy of `model_dir` to `output_dir` (replacing it); returns the checkpoint
  prefix shipped."""
  if os.path.abspath(output_dir) == os.path.abspath(model_dir):
    raise ValueError("--output_dir must differ from --model_dir")
  parent = os.path.dirname(os.path.abspath(output_dir))
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=".ship-", dir=parent)
  try:
    prefix = _assemble(model_dir, tmp, overrides, log, weights_only)
    if os.path.exists(output_dir):
      shutil.rmtree(output_dir)
    os.replace(tmp, output_dir)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return prefix


def main(argv):
  del argv
  try:
    prefix = ship(FLAGS.model_dir, FLAGS.output_dir, FLAGS.set, FLAGS.log, FLAGS.weights_only)
  except (OSError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  print(f"shipped {prefix} -> {FLAGS.output_dir}")


if __name__ == "__main__":
  app.run(main)
