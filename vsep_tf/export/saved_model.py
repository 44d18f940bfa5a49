r"""Export a separator as a SavedModel in TF-Serving's layout, and load it back as a Separator.

  python -m vsep_tf.export.saved_model --model_dir=runs/toy_supervised --export_base=exports --name=toy
  -> exports/toy/<version>/{saved_model.pb, variables/, assets/metadata.json}   (version: --version, else next)

Signatures (inputs and outputs by name, float32 samples at the model's rate, sources in `source_names` order):

  serving_default = separate   mix [batch, time]        -> sources [batch, N, time]
  separate_chunk               mix [1, chunk_length]    -> sources [1, N, chunk_length]   (fixed shape: TFLite)
  metadata                     ()                       -> source_names string [N], num_sources, sample_rate,
                                                           chunk_length, chunk_overlap int32 [], mix, method string []
  separate_channels            mix [batch, C, time]     -> sources [batch, C, N, time]    (spectral separators only:
                                                           a track's channels together, masks of the mid channel)

The same metadata (plus the separator's describe()) is in assets/metadata.json, readable without TensorFlow.
Inputs with NaN/Inf or no samples fail inside the graph with INVALID_ARGUMENT (tf.debugging.check_numerics,
assert_positive), so TF-Serving answers such a request with an error instead of NaN sources. (TFLite drops both
checks: its runtime has no such ops.) Long signals: call `separate` on chunks and
overlap-add (vsep_tf.export.client and SavedModelSeparator.separate_long do).

The separator's networks become attributes of the exported tf.Module so that their variables are tracked and
saved (a tf.Module does not see a Keras 3 model's weights in `trainable_variables`; the SavedModel's object graph
does): export checks that every variable was saved. The Langevin separator (a --job=priors directory) exports
its whole annealed loop, gradients included, as one graph; by default without XLA (`--xla` keeps the
separator's jit_compile, which tensorflow_model_server only runs with --xla_cpu_compilation_enabled=true).

A model directory is exported at a quality preset (--quality, as vsep_tf.separate's; default 'fast': a spectral
separator's one forward pass; 'balanced': 50 iterations of its MAP fit; 'best': its full MAP fit, tens of times slower).

The version directory is written under a hidden temporary name next to it and renamed into place when complete,
so a TF-Serving instance polling BASE/NAME never loads a half-written version.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile

import keras
import numpy as np
import tensorflow as tf

import vsep_tf
from vsep_tf.separators.base import Separator, channels_batch

METADATA_FILE = "metadata.json"
FORMAT_VERSION = 1
SIGNATURES = ("serving_default", "separate_chunk", "metadata")


def _is_trackable_model(value) -> bool:
  return isinstance(value, (tf.Module, keras.layers.Layer, tf.Variable))


def model_attributes(separator: Separator) -> dict:
  """The separator's attributes that hold networks or variables ({name: model or dict/list of models})."""
  found = {}
  for name, value in vars(separator).items():
    if name.startswith("_"):
      continue
    if _is_trackable_model(value):
      found[name] = value
    elif isinstance(value, dict) and value and all(_is_trackable_model(v) for v in value.values()):
      found[name] = dict(value)
    elif isinstance(value, (list, tuple)) and value and all(_is_trackable_model(v) for v in value):
      found[name] = list(value)
  return found


def _variables(models) -> list:
  """The distinct variables of a {name: model, dict or list of models} mapping."""
  seen = {}
  for value in models.values():
    items = list(value.values()) if isinstance(value, dict) else list(value) if isinstance(value, list) else [value]
    for m in items:
      for v in ([m] if isinstance(m, tf.Variable) else m.variables):
        seen.setdefault(id(v), v)
  return list(seen.values())


def metadata_of(separator: Separator, chunk_length: int) -> dict:
  """What a consumer of the export needs, JSON-serialisable."""
  return {
      "format_version": FORMAT_VERSION,
      "vsep_tf_version": vsep_tf.__version__,
      "method": str(separator.method),
      "source_names": [str(n) for n in separator.source_names],
      "num_sources": int(separator.num_sources),
      "sample_rate": int(separator.sample_rate),
      "mix": str(separator.mix),
      "chunk_length": int(chunk_length),
      "chunk_overlap": int(min(separator.chunk_overlap, chunk_length // 2)),
      "inputs": {"mix": "float32 [batch, time] at sample_rate"},
      "outputs": {"sources": "float32 [batch, num_sources, time]"},
      "describe": json.loads(json.dumps(separator.describe(), default=str)),
  }


class SeparatorModule(tf.Module):
  """tf.Module exporting a Separator's `separate` with explicit signatures. See the module docstring.

  The separator's networks are assigned as attributes (tracked and saved); `separate` calls the separator's
  own graph code (its tf.function) on them.
  """

  def __init__(self, separator: Separator, chunk_length: int, metadata_path: str = None):
    super().__init__(name="vsep_separator")
    self._separator = separator  # plain Python object: not tracked; its networks are, below
    self.models = model_attributes(separator)
    if not self.models:
      raise ValueError(f"{type(separator).__name__} holds no TensorFlow model to export")
    self._meta_json = json.dumps(metadata_of(separator, chunk_length))  # a string: nothing for tracking to wrap
    if metadata_path is not None:
      self.metadata_file = tf.saved_model.Asset(metadata_path)
    self.separate = tf.function(self._separate,
                                input_signature=[tf.TensorSpec([None, None], tf.float32, name="mix")])
    self.separate_chunk = tf.function(self._separate,
                                      input_signature=[tf.TensorSpec([1, chunk_length], tf.float32, name="mix")])
    self.metadata = tf.function(self._metadata, input_signature=[])
    self.separate_channels = None  # a separator that separates a track's channels together (spectral: 'mid')
    if hasattr(separator, "separate_channels_graph"):
      self.separate_channels = tf.function(
          self._separate_channels, input_signature=[tf.TensorSpec([None, None, None], tf.float32, name="mix")])

  @property
  def meta(self) -> dict:
    return json.loads(self._meta_json)

  @staticmethod
  def _checked(mix):
    # Bad requests fail with INVALID_ARGUMENT inside the graph, so the real TF-Serving rejects them too.
    not_empty = tf.debugging.assert_positive(tf.shape(mix)[-1], message="mix is empty (0 samples)")
    with tf.control_dependencies([not_empty]):
      return tf.debugging.check_numerics(mix, "mix contains NaN or Inf")

  def _separate(self, mix):
    mix = self._checked(mix)
    sources = tf.convert_to_tensor(self._separator.separate(mix), tf.float32)
    return {"sources": tf.ensure_shape(sources, [mix.shape[0], self.meta["num_sources"], mix.shape[1]])}

  def _separate_channels(self, mix):
    mix = self._checked(mix)
    sources = self._separator.separate_channels_graph(mix)
    return {"sources": tf.ensure_shape(sources, [None, None, self.meta["num_sources"], None])}

  def _metadata(self):
    m = self.meta
    return {
        "source_names": tf.constant(m["source_names"], tf.string),
        "num_sources": tf.constant(m["num_sources"], tf.int32),
        "sample_rate": tf.constant(m["sample_rate"], tf.int32),
        "chunk_length": tf.constant(m["chunk_length"], tf.int32),
        "chunk_overlap": tf.constant(m["chunk_overlap"], tf.int32),
        "mix": tf.constant(m["mix"], tf.string),
        "method": tf.constant(m["method"], tf.string),
    }

  def signatures(self) -> dict:
    signatures = {"serving_default": self.separate, "separate_chunk": self.separate_chunk, "metadata": self.metadata}
    if self.separate_channels is not None:
      signatures["separate_channels"] = self.separate_channels
    return signatures


def next_version(model_base: str) -> int:
  """1 + the highest numeric version directory in BASE/NAME (1 if none)."""
  versions = numeric_versions(model_base)
  return (max(versions) + 1) if versions else 1


def numeric_versions(model_base: str) -> list:
  if not os.path.isdir(model_base):
    return []
  return sorted(int(d) for d in os.listdir(model_base)
                if d.isdigit() and os.path.isfile(os.path.join(model_base, d, "saved_model.pb")))


def version_dir(path: str) -> str:
  """A SavedModel directory from `path`: itself if it holds saved_model.pb, else its highest numeric version
  (TF-Serving's BASE/NAME layout)."""
  if os.path.isfile(os.path.join(path, "saved_model.pb")):
    return path
  versions = numeric_versions(path)
  if not versions:
    raise FileNotFoundError(f"{path}: neither a SavedModel (saved_model.pb) nor a directory of numbered versions")
  return os.path.join(path, str(versions[-1]))


def export_saved_model(separator: Separator, export_base: str, name: str, version: int = None,
                       chunk_length: int = None, overwrite: bool = False) -> str:
  """Writes BASE/NAME/<version>/ (see the module docstring) and returns its path.

  version: None -> next_version(BASE/NAME). An existing version is replaced only with overwrite=True.
  chunk_length: the fixed length of `separate_chunk` (default: the separator's chunk_length).
  Raises RuntimeError if the saved variables are not exactly the separator's.
  """
  if not name or os.sep in name or name.startswith("."):
    raise ValueError(f"bad model name {name!r}")
  model_base = os.path.join(export_base, name)
  version = next_version(model_base) if version is None else int(version)
  if version <= 0:
    raise ValueError(f"version must be a positive integer, got {version}")
  final = os.path.join(model_base, str(version))
  if os.path.exists(final) and not overwrite:
    raise FileExistsError(f"{final} exists; pass overwrite=True (--overwrite) or another --version")
  chunk_length = int(chunk_length or separator.chunk_length)
  os.makedirs(model_base, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=model_base)  # not numeric: TF-Serving ignores it
  scratch = tempfile.mkdtemp(prefix="vsep-export-")
  try:
    meta_path = os.path.join(scratch, METADATA_FILE)
    with open(meta_path, "w", encoding="utf-8") as f:
      json.dump(metadata_of(separator, chunk_length), f, indent=2, sort_keys=True)
    module = SeparatorModule(separator, chunk_length, metadata_path=meta_path)
    out = os.path.join(tmp, "model")
    tf.saved_model.save(module, out, signatures=module.signatures())
    expected = len(_variables(module.models))
    saved = [n for n, _ in tf.train.list_variables(os.path.join(out, "variables", "variables"))
             if n != "_CHECKPOINTABLE_OBJECT_GRAPH"]
    if len(saved) != expected:
      raise RuntimeError(f"export saved {len(saved)} variables, the separator has {expected}: untracked weights")
    trash = None
    if os.path.exists(final):
      trash = tempfile.mkdtemp(prefix=f".old-{version}-", dir=model_base)
      os.rename(final, os.path.join(trash, "model"))
    os.rename(out, final)
    if trash:
      shutil.rmtree(trash, ignore_errors=True)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(scratch, ignore_errors=True)
  return final


def read_metadata(path: str) -> dict:
  """assets/metadata.json of an export (BASE/NAME or a version directory), without loading the graph."""
  with open(os.path.join(version_dir(path), "assets", METADATA_FILE), encoding="utf-8") as f:
    return json.load(f)


class SavedModelSeparator(Separator):
  """An exported SavedModel as a Separator (separate = the serving_default signature)."""

  def __init__(self, path: str):
    self.path = version_dir(path)
    meta = read_metadata(self.path)
    self.meta = meta
    self.method = f"saved_model/{meta['method']}"
    self.source_names = tuple(meta["source_names"])
    self.sample_rate = int(meta["sample_rate"])
    self.mix = meta["mix"]
    self.chunk_length = int(meta["chunk_length"])
    self.chunk_overlap = int(meta["chunk_overlap"])
    self.model = tf.saved_model.load(self.path)
    self._fn = self.model.signatures["serving_default"]
    self._channels_fn = self.model.signatures.get("separate_channels")

  def separate(self, mix) -> tf.Tensor:
    mix = tf.convert_to_tensor(mix, tf.float32)
    if mix.shape.rank != 2:
      raise ValueError(f"mix must be [batch, time], got shape {mix.shape}")
    return self._fn(mix=mix)["sources"]

  def separate_channels(self, mix) -> np.ndarray:
    """mix [batch, channels, time] -> [batch, channels, N, time]: the export's separate_channels signature (the
    channels separated together, as the exported separator does) if it has one, else every channel on its own."""
    if self._channels_fn is None:
      return super().separate_channels(mix)
    mix = channels_batch(mix)
    return self._channels_fn(mix=tf.constant(mix))["sources"].numpy()


# ---------------------------------------------------------------------------------------------------- CLI
def load_for_export(model_dir: str, overrides=(), xla: bool = False, quality: str = "best") -> Separator:
  """The separator of a model directory (model_dir.load_separator's quality preset), the Langevin one
  (--job=priors) built with jit_compile=xla."""
  from vsep_tf import model_dir as model_dir_lib  # pylint: disable=import-outside-toplevel
  kind = model_dir_lib.separator_kind(model_dir_lib.load_config(model_dir, list(overrides)))
  if kind == "periodic":
    raise ValueError(f"{model_dir} separates by the periodic-component search, which runs in numpy on the host "
                     "and has no TensorFlow graph to export; export its priors as a Langevin separator "
                     "(--model_override=--priors_search=langevin) or an encoder directory")
  separator = model_dir_lib.load_separator(model_dir, list(overrides), quality=quality)
  if kind == "langevin":
    separator.use_xla(bool(xla))
  return separator


def main(argv):
  from absl import app, flags  # pylint: disable=import-outside-toplevel
  del app
  fv = flags.FLAGS
  if len(argv) > 1:
    print(f"error: unexpected arguments {argv[1:]}", file=sys.stderr)
    return 2
  for required in ("model_dir", "export_base", "name"):
    if not fv[required].value:
      print(f"error: --{required} is required", file=sys.stderr)
      return 2
  try:
    separator = load_for_export(fv.model_dir, fv.model_override, fv.xla, fv.quality)
    path = export_saved_model(separator, fv.export_base, fv.name, fv.version or None, fv.chunk_length or None,
                              overwrite=fv.overwrite)
  except (FileNotFoundError, FileExistsError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  meta = read_metadata(path)
  print(f"exported {meta['method']} separator ({', '.join(meta['source_names'])}; {meta['sample_rate']} Hz, "
        f"chunk {meta['chunk_length']}) to {path}")
  print(f"inspect: saved_model_cli show --all --dir {path}")
  return 0


def _define_flags():
  from absl import flags  # pylint: disable=import-outside-toplevel
  from vsep_tf import cli  # pylint: disable=import-outside-toplevel
  flags.DEFINE_string("model_dir", None, "A `python -m vsep_tf.train` model directory.")
  flags.DEFINE_string("export_base", None, "TF-Serving model base: the export goes to <export_base>/<name>/<version>.")
  flags.DEFINE_string("name", None, "Model name (TF-Serving's MODEL_NAME).")
  flags.DEFINE_integer("version", 0, "Version number (0: one more than the highest existing).")
  flags.DEFINE_integer("chunk_length", 0, "Fixed length of the separate_chunk signature (0: the separator's).")
  flags.DEFINE_boolean("overwrite", False, "Replace an existing version.")
  flags.DEFINE_boolean("xla", False, "Keep XLA (jit_compile) in the Langevin separator's graph.")
  flags.DEFINE_multi_string("model_override", [], "'--name=value' replacing a flag saved in the model directory.")
  flags.DEFINE_enum("quality", "fast", list(cli.QUALITIES), "The model's quality preset to export (as "
                    "vsep_tf.separate --quality): 'fast' a spectral separator's one pass, 'balanced' 50 MAP "
                    "iterations, 'best' its full MAP fit.")


def run():
  from absl import app  # pylint: disable=import-outside-toplevel
  _define_flags()
  app.run(main)


if __name__ == "__main__":
  run()
