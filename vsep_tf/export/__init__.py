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
