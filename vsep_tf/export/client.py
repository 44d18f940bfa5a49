r"""Separate audio files against a TF-Serving endpoint (gRPC PredictionService) serving a vsep-tf export.

  python -m vsep_tf.export.client --server=localhost:8500 --model_name=toy --input=song.wav --output_dir=out
  python export/serving_client.py ...                                  (the same, from the repository)

Works with the real tensorflow_model_server and with the development stand-in (vsep_tf.export.dev_server):
only TF-Serving's public API is used, through the official stub
(tensorflow_serving.apis.prediction_service_pb2_grpc.PredictionServiceStub):

  * Predict(signature_name="metadata") once: source names, sample rate, chunk length and cross-fade;
  * GetModelMetadata(signature_def) once: whether the export separates a track's channels together
    (`separate_channels`, a spectral separator's export); stereo chunks then go to it, so the served separation
    equals the model directory's (masks of the mid channel), else every channel goes to serving_default alone;
  * Predict(signature_name="serving_default", inputs={"mix": tf.make_tensor_proto([batch, chunk])}) per batch of
    chunks: the file is streamed, resampled and cross-faded exactly as `python -m vsep_tf.separate` does
    (vsep_tf.inference.separate_files), so memory and request sizes do not grow with the file's length. The
    flags, messages, exit codes and Ctrl-C / SIGTERM handling are those of `python -m vsep_tf.separate` too
    (vsep_tf.cli).

`ServingSeparator` is a separators.base.Separator whose `separate` is one Predict call: separate_long and
vsep_tf.inference.AudioSeparator work on it unchanged.
"""
from __future__ import annotations

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from vsep_tf import cli
from vsep_tf.separators.base import Separator, channels_batch, separate_fixed_rows

GRPC_OPTIONS = [("grpc.max_send_message_length", 2 ** 31 - 1), ("grpc.max_receive_message_length", 2 ** 31 - 1)]


class ServingSeparator(Separator):
  """A model served by TF-Serving (or the stand-in) as a Separator.

  Args:
    target: 'host:port' of the gRPC endpoint.
    model_name: model_spec.name (TF-Serving's MODEL_NAME).
    signature_name: the separation signature: 'serving_default' (any length, batched) or 'separate_chunk'
      (fixed [1, chunk]: rows are sent one by one, zero-padded).
    version: a model version (None: the latest the server has).
    timeout: seconds per call.
  """

  def __init__(self, target: str, model_name: str, signature_name: str = "serving_default", version: int = None,
               timeout: float = 120.0, channel=None):
    self.target, self.model_name = target, model_name
    self.signature_name, self.version, self.timeout = signature_name, version, float(timeout)
    self.channel = channel or grpc.insecure_channel(target, options=GRPC_OPTIONS)
    self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
    meta = self.predict("metadata", {})
    self.source_names = tuple(s.decode("utf-8") for s in meta["source_names"].reshape(-1))
    self.sample_rate = int(meta["sample_rate"])
    self.chunk_length = int(meta["chunk_length"])
    self.chunk_overlap = int(meta["chunk_overlap"])
    self.mix = meta["mix"].item().decode("utf-8")
    self.method = f"serving/{meta['method'].item().decode('utf-8')}"
    self.signatures = self.signature_names()

  def signature_names(self) -> tuple:
    """The served model's signatures (GetModelMetadata, metadata_field 'signature_def')."""
    req = get_model_metadata_pb2.GetModelMetadataRequest()
    req.model_spec.name = self.model_name
    if self.version is not None:
      req.model_spec.version.value = int(self.version)
    req.metadata_field.append("signature_def")
    response = self.stub.GetModelMetadata(req, timeout=self.timeout)
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(sig_map)
    return tuple(sorted(sig_map.signature_def))

  def request(self, signature_name: str, inputs: dict) -> predict_pb2.PredictRequest:
    req = predict_pb2.PredictRequest()
    req.model_spec.name = self.model_name
    req.model_spec.signature_name = signature_name
    if self.version is not None:
      req.model_spec.version.value = int(self.version)
    for key, value in inputs.items():
      req.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    return req

  def predict(self, signature_name: str, inputs: dict) -> dict:
    """One Predict call: {input name: array} -> {output name: numpy array}. Raises grpc.RpcError."""
    response = self.stub.Predict(self.request(signature_name, inputs), timeout=self.timeout)
    return {key: tf.make_ndarray(proto) for key, proto in response.outputs.items()}

  def separate(self, mix) -> np.ndarray:
    mix = np.asarray(mix, np.float32)
    if mix.ndim != 2:
      raise ValueError(f"mix must be [batch, time], got shape {mix.shape}")
    if self.signature_name != "separate_chunk":
      return self.predict(self.signature_name, {"mix": mix})["sources"]
    return separate_fixed_rows(lambda row: self.predict(self.signature_name, {"mix": row})["sources"], mix,
                               self.chunk_length, self.num_sources)

  def separate_channels(self, mix) -> np.ndarray:
    """mix [batch, channels, time] -> [batch, channels, N, time]: one Predict of the export's separate_channels
    signature when it has one (and serving_default is the separation signature), else every channel alone."""
    if self.signature_name != "serving_default" or "separate_channels" not in self.signatures:
      return super().separate_channels(mix)
    mix = channels_batch(mix)
    return self.predict("separate_channels", {"mix": mix})["sources"]


PROG = "serving_client"


def main(argv):
  from absl import flags  # pylint: disable=import-outside-toplevel
  fv = flags.FLAGS
  session = cli.Session(PROG)
  if len(argv) > 1:
    return session.error(f"unexpected arguments {argv[1:]} (every option is a --flag)", code=2)
  if not fv.server or not fv.model_name:
    return session.error("--server and --model_name are required", code=2)
  problem = cli.check_flags(fv)
  if problem:
    return session.error(problem, code=2)

  def work():  # in a worker thread (cli.Session.run): a gRPC call can take up to --timeout
    try:
      separator = ServingSeparator(fv.server, fv.model_name, fv.signature_name, fv.model_version or None,
                                   fv.timeout)
    except grpc.RpcError as e:
      return session.error(f"{fv.server} model '{fv.model_name}': {e.code().name}: {e.details()}", code=2)
    return session.separate_files(separator, fv, errors=(grpc.RpcError,))

  return session.run(work)


def define_flags():
  from absl import flags  # pylint: disable=import-outside-toplevel
  flags.DEFINE_string("server", "localhost:8500", "host:port of the TF-Serving gRPC endpoint.")
  flags.DEFINE_string("model_name", None, "The served model's name (model_spec.name).")
  flags.DEFINE_string("signature_name", "serving_default", "serving_default (batched) or separate_chunk.")
  flags.DEFINE_integer("model_version", 0, "A specific version (0: the latest served).")
  flags.DEFINE_float("timeout", 120.0, "Seconds per Predict call.")
  cli.define_flags(flags.FLAGS)


def run():
  from absl import app  # pylint: disable=import-outside-toplevel
  define_flags()
  app.run(main, flags_parser=cli.flags_parser(PROG))


if __name__ == "__main__":
  run()
