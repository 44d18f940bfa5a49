"""Deployment: SavedModel (TF-Serving layout), TFLite, a TF-Serving gRPC client and a development stand-in server.

  saved_model  export_saved_model(separator, base, name) -> BASE/NAME/<version>; SavedModelSeparator
  tflite       convert / export_tflite (float32, dynamic-range int8, float16) of the fixed-length chunk signature;
               TFLiteSeparator (ai-edge-litert, else tf.lite)
  client       ServingSeparator: separate through any TF-Serving endpoint (PredictionService over gRPC)
  dev_server   a Python STAND-IN for tensorflow_model_server (Predict, GetModelMetadata, GetModelStatus)

Every loaded form is a separators.base.Separator, so separate_long / separate_stream / vsep_tf.inference work the
same on all of them.
"""


def load_exported(path: str):
  """An exported model as a Separator: a .tflite file -> TFLiteSeparator, else a SavedModel (BASE/NAME or a
  version directory) -> SavedModelSeparator."""
  if str(path).endswith(".tflite"):
    from vsep_tf.export.tflite import TFLiteSeparator  # pylint: disable=import-outside-toplevel
    return TFLiteSeparator(path)
  from vsep_tf.export.saved_model import SavedModelSeparator  # pylint: disable=import-outside-toplevel
  return SavedModelSeparator(path)


def export_variants(separator, work_dir: str, chunk_length: int, name: str = "model", num_threads: int = None):
  """Exports `separator` as a SavedModel (TF-Serving layout, version 1) and as TFLite float32, dynamic-range int8
  and float16 of its `chunk_length` signature under `work_dir`; returns ({variant: Separator}, {variant: bytes on
  disk}, saved_model_version_dir). The eager separator itself is the first variant. Used by the benchmarks."""
  import os  # pylint: disable=import-outside-toplevel
  from vsep_tf.export import saved_model as saved_model_lib  # pylint: disable=import-outside-toplevel
  from vsep_tf.export import tflite as tflite_lib  # pylint: disable=import-outside-toplevel
  export_dir = saved_model_lib.export_saved_model(separator, os.path.join(work_dir, "saved"), name,
                                                  chunk_length=chunk_length, overwrite=True, version=1)
  quantizations = ("none", "dynamic", "float16")
  if separator.method == "harmonic":  # its SavedModel's STFT is complex: the TFLite graph is built from the separator
    quantizations = tflite_lib.HARMONIC_QUANTIZATIONS  # float16 is refused (tflite.HARMONIC_FLOAT16)
    lite = tflite_lib.export_model_tflite(separator, os.path.join(work_dir, "tflite"), name, quantizations,
                                          chunk_length=chunk_length, saved_model_dir=export_dir)
  else:
    lite = tflite_lib.export_tflite(export_dir, os.path.join(work_dir, "tflite"), name, quantizations)
  labels = {"none": "TFLite float32", "dynamic": "TFLite dynamic-range int8", "float16": "TFLite float16"}
  variants = {"eager (tf.function)": separator, "SavedModel": saved_model_lib.SavedModelSeparator(export_dir)}
  sizes = {"eager (tf.function)": None,
           "SavedModel": sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(export_dir) for f in fs)}
  for q, label in labels.items():
    if q not in lite:
      continue
    variants[label] = tflite_lib.TFLiteSeparator(lite[q], num_threads=num_threads)
    sizes[label] = os.path.getsize(lite[q])
  return variants, sizes, export_dir


def chunk_flops(saved_model_dir: str) -> tuple:
  """(float operations of one call of the export's fixed-length `separate_chunk` signature, its chunk length),
  counted by TensorFlow's graph profiler on the frozen, inlined graph (multiply-add = 2 FLOPs)."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from vsep_tf.export import saved_model as saved_model_lib  # pylint: disable=import-outside-toplevel
  from vsep_tf.export import tflite as tflite_lib  # pylint: disable=import-outside-toplevel
  frozen, chunk = tflite_lib.frozen_chunk_function(saved_model_lib.version_dir(saved_model_dir))
  opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
  opts["output"] = "none"
  info = tf.compat.v1.profiler.profile(frozen.graph, options=opts)
  return int(info.total_float_ops), chunk
