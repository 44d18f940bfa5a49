r"""TFLite: the exported SavedModel's fixed-length `separate_chunk` signature, float32 or quantised, and a runner.

  python -m vsep_tf.export.tflite --saved_model_dir=exports/toy --output_dir=exports/toy_tflite \
      --quantize=none,dynamic,float16
  -> exports/toy_tflite/toy_{f32,dynamic,f16}.tflite, each with a .json of the export's metadata beside it

Variants:
  none     float32 weights and activations (parity with the SavedModel to float rounding)
  dynamic  dynamic-range quantisation: int8 weights, activations quantised on the fly (about 4x smaller)
  float16  float16 weights, float32 compute (about 2x smaller)

Conversion goes through a frozen graph: the signature's variables are turned into constants first
(convert_variables_to_constants_v2) and the frozen function is re-saved with the same signature name and tensor
names. Converting the SavedModel directly leaves the Keras 3 variables as uninitialised TFLite resource variables
(NaN outputs). The TFLite model is encoder-only in practice: the Langevin separator's gradient loop is not
convertible to TFLite builtins.

`TFLiteSeparator` runs a .tflite file (ai_edge_litert's Interpreter, tf.lite's where that is what is installed)
as a Separator: `separate` pads every row to the chunk length; separate_long / vsep_tf.inference do the rest.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile

import numpy as np
import tensorflow as tf

from vsep_tf.export import saved_model as saved_model_lib
from vsep_tf.separators.base import Separator, separate_fixed_rows

QUANTIZATIONS = {"none": "f32", "dynamic": "dynamic", "float16": "f16"}
SIGNATURE = "separate_chunk"


def frozen_chunk_function(saved_model_dir: str):
  """(the export's `separate_chunk` signature with its variables frozen to constants, its chunk length)."""
  # convert_variables_to_constants_v2 has no public tf.* alias; it is what TFLite's own converter uses.
  from tensorflow.python.framework import convert_to_constants  # pylint: disable=import-outside-toplevel
  loaded = tf.saved_model.load(saved_model_dir)  # must outlive the conversion: it owns the variables
  fn = loaded.signatures[SIGNATURE]
  chunk = int(fn.structured_input_signature[1]["mix"].shape[1])
  return convert_to_constants.convert_variables_to_constants_v2(fn), chunk


# Separators whose graphs use ops outside TFLite's builtins (measured: the converter fails on them).
NOT_CONVERTIBLE = {
    "spectral": "its MAP fit runs on STFT frames (complex RFFT / IRFFT slices) and differentiates GELU (Erfc) "
                "inside the graph, ops TFLite's builtins lack; serve the SavedModel with TF-Serving, or convert "
                "a waveform encoder directory (configs/research/toy_supervised.flags)"}


def _frozen_chunk_module(saved_model_dir: str):
  """A tf.Module whose `separate_chunk` is the export's chunk signature with its variables frozen."""
  frozen, chunk = frozen_chunk_function(saved_model_dir)

  class Frozen(tf.Module):

    @tf.function(input_signature=[tf.TensorSpec([1, chunk], tf.float32, name="mix")])
    def separate_chunk(self, mix):
      return {"sources": frozen(mix=mix)[0]}

  return Frozen(), chunk


def convert(saved_model_dir: str, quantize: str = "none") -> bytes:
  """The .tflite flatbuffer of the export's `separate_chunk` signature (input 'mix', output 'sources')."""
  if quantize not in QUANTIZATIONS:
    raise ValueError(f"quantize must be one of {sorted(QUANTIZATIONS)}, got {quantize!r}")
  path = saved_model_lib.version_dir(saved_model_dir)
  method = saved_model_lib.read_metadata(path).get("method")
  if method in NOT_CONVERTIBLE:
    raise ValueError(f"{saved_model_dir}: a {method!r} separator does not convert to TFLite: "
                     f"{NOT_CONVERTIBLE[method]}")
  module, _ = _frozen_chunk_module(path)
  scratch = tempfile.mkdtemp(prefix="vsep-tflite-")
  try:
    tf.saved_model.save(module, scratch, signatures={SIGNATURE: module.separate_chunk})
    converter = tf.lite.TFLiteConverter.from_saved_model(scratch, signature_keys=[SIGNATURE])
    if quantize in ("dynamic", "float16"):
      converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
      converter.target_spec.supported_types = [tf.float16]
    return converter.convert()
  finally:
    shutil.rmtree(scratch, ignore_errors=True)


def _atomic_write(path: str, data: bytes) -> None:
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.unlink(tmp)


def metadata_path(tflite_path: str) -> str:
  return os.path.splitext(tflite_path)[0] + ".json"


def export_tflite(saved_model_dir: str, output_dir: str, name: str = None,
                  quantizations=("none", "dynamic")) -> dict:
  """Writes <output_dir>/<name>_<f32|dynamic|f16>.tflite (+ .json metadata) per variant; {quantize: path}."""
  src = saved_model_lib.version_dir(saved_model_dir)
  meta = saved_model_lib.read_metadata(src)
  name = name or os.path.basename(os.path.dirname(os.path.abspath(src))) or "model"
  paths = {}
  for q in quantizations:
    data = convert(src, q)
    path = os.path.join(output_dir, f"{name}_{QUANTIZATIONS[q]}.tflite")
    info = dict(meta, quantization=q, signature=SIGNATURE, source_saved_model=os.path.abspath(src),
                size_bytes=len(data))
    _atomic_write(metadata_path(path), json.dumps(info, indent=2, sort_keys=True).encode("utf-8"))
    _atomic_write(path, data)
    paths[q] = path
  return paths


def make_interpreter(model_path: str = None, model_content: bytes = None, num_threads: int = None):
  """ai_edge_litert's Interpreter (the maintained runtime), else tf.lite.Interpreter."""
  try:
    from ai_edge_litert.interpreter import Interpreter  # pylint: disable=import-outside-toplevel
  except ImportError:
    Interpreter = tf.lite.Interpreter  # pylint: disable=invalid-name
  return Interpreter(model_path=model_path, model_content=model_content, num_threads=num_threads)


class TFLiteSeparator(Separator):
  """A .tflite export (signature separate_chunk: mix [1, chunk] -> sources [1, N, chunk]) as a Separator.

  separate(mix [batch, time <= chunk]) runs the rows one by one, zero-padded to the chunk length (the model is
  fixed-shape); longer signals go through separate_long / separate_stream with chunk_length <= the chunk.
  """

  def __init__(self, path: str, num_threads: int = None):
    self.path = path
    with open(metadata_path(path), encoding="utf-8") as f:
      self.meta = json.load(f)
    self.method = f"tflite-{self.meta['quantization']}/{self.meta['method']}"
    self.source_names = tuple(self.meta["source_names"])
    self.sample_rate = int(self.meta["sample_rate"])
    self.mix = self.meta["mix"]
    self.chunk_length = int(self.meta["chunk_length"])
    self.chunk_overlap = int(self.meta["chunk_overlap"])
    self.interpreter = make_interpreter(model_path=path, num_threads=num_threads)
    self._runner = self.interpreter.get_signature_runner(SIGNATURE)

  def separate(self, mix) -> np.ndarray:
    return separate_fixed_rows(lambda row: self._runner(mix=row)["sources"], mix, self.chunk_length,
                               self.num_sources)


def main(argv):
  from absl import flags  # pylint: disable=import-outside-toplevel
  fv = flags.FLAGS
  if len(argv) > 1:
    print(f"error: unexpected arguments {argv[1:]}", file=sys.stderr)
    return 2
  if not fv.saved_model_dir or not fv.output_dir:
    print("error: --saved_model_dir and --output_dir are required", file=sys.stderr)
    return 2
  bad = [q for q in fv.quantize if q not in QUANTIZATIONS]
  if bad:
    print(f"error: --quantize: unknown {bad}; choose from {sorted(QUANTIZATIONS)}", file=sys.stderr)
    return 2
  try:
    paths = export_tflite(fv.saved_model_dir, fv.output_dir, fv.name, fv.quantize)
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  for q, p in paths.items():
    print(f"{q}: {p} ({os.path.getsize(p) / 1024:.1f} KiB)")
  return 0


def _define_flags():
  from absl import flags  # pylint: disable=import-outside-toplevel
  flags.DEFINE_string("saved_model_dir", None, "An export of vsep_tf.export.saved_model (BASE/NAME or a version).")
  flags.DEFINE_string("output_dir", None, "Where the .tflite files go.")
  flags.DEFINE_string("name", None, "File name prefix (default: the export's model name).")
  flags.DEFINE_list("quantize", ["none", "dynamic"], f"Variants: {', '.join(QUANTIZATIONS)}.")


def run():
  from absl import app  # pylint: disable=import-outside-toplevel
  _define_flags()
  app.run(main)


if __name__ == "__main__":
  run()
