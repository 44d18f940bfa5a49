r"""A development STAND-IN for TensorFlow Serving (NOT TF-Serving): its gRPC API over an exported SavedModel.

  python -m vsep_tf.export.dev_server --model_base_path=exports/toy --model_name=toy --port=8500

tensorflow_model_server cannot be installed on every machine (no PyPI wheel, no Debian package). This server
implements the part of TF-Serving's gRPC API that vsep-tf's client uses, in Python (grpcio + TensorFlow), so that
the official client code (tensorflow_serving.apis.prediction_service_pb2_grpc.PredictionServiceStub) can be
developed and tested against it:

  tensorflow.serving.PredictionService/Predict            any signature of the model, by model_spec.signature_name
  tensorflow.serving.PredictionService/GetModelMetadata   metadata_field ["signature_def"]
  tensorflow.serving.ModelService/GetModelStatus          the served version, AVAILABLE

It serves ONE model: the highest numeric version under --model_base_path (TF-Serving's layout BASE/NAME/<version>),
read once at start (no version polling, no batching, no REST API, no model config file). Errors follow
TF-Serving's codes (tensorflow_serving/servables/tensorflow/predict_util.cc): NOT_FOUND for an unknown model name
or version; FAILED_PRECONDITION for an unknown signature (as TF-Serving: "Serving signature key ... not found");
INVALID_ARGUMENT for missing / unexpected inputs, a wrong dtype or shape, NaN/Inf or empty input, an unknown
output_filter entry, and any InvalidArgumentError raised by the graph. The stand-in checks dtype, shape and
finiteness before running the graph (clearer messages); the real server gets INVALID_ARGUMENT for the same
requests from the graph itself (typed placeholders, and the export's in-graph NaN/Inf and length checks).
A bad request never stops the server.

In production serve the same directory with the real server, e.g.
  docker run -p 8500:8500 -v "$PWD/exports:/models" -e MODEL_NAME=toy tensorflow/serving
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from concurrent import futures

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from vsep_tf.export import saved_model as saved_model_lib

STAND_IN = "development stand-in for TensorFlow Serving (not TF-Serving)"
DEFAULT_SIGNATURE = "serving_default"
# TF-Serving accepts messages up to 2 GiB; so does the stand-in (a minute of 4 sources at 44.1 kHz is 42 MB).
MAX_MESSAGE_BYTES = 2 ** 31 - 1
GRPC_OPTIONS = [("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]


class ServedModel:
  """One loaded version: its signatures (callables) and SignatureDefs (protos, for GetModelMetadata)."""

  def __init__(self, model_base_path: str, name: str):
    self.name = name
    self.path = saved_model_lib.version_dir(model_base_path)
    self.version = int(os.path.basename(os.path.normpath(self.path))) if os.path.basename(
        os.path.normpath(self.path)).isdigit() else 1
    self.loaded = tf.saved_model.load(self.path)
    self.signatures = dict(self.loaded.signatures)
    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(self.path, "saved_model.pb"), "rb") as f:
      proto.ParseFromString(f.read())
    meta_graph = next(m for m in proto.meta_graphs if "serve" in m.meta_info_def.tags)
    self.signature_defs = {k: v for k, v in meta_graph.signature_def.items() if not k.startswith("__")}


def _abort(context, code, message):
  context.abort(code, message)  # raises: ends the RPC with this status


def _check_input(name: str, proto, spec: tf.TensorSpec, context):
  """The request tensor as numpy, after TF-Serving-like checks (dtype, rank, static dims, finite)."""
  if proto.dtype != spec.dtype.as_datatype_enum:
    _abort(context, grpc.StatusCode.INVALID_ARGUMENT,
           f"input '{name}': expects dtype {spec.dtype.name}, got {tf.dtypes.as_dtype(proto.dtype).name}"
           if proto.dtype else f"input '{name}': expects dtype {spec.dtype.name}, got an invalid dtype")
  try:
    value = tf.make_ndarray(proto)
  except (ValueError, TypeError) as e:
    _abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"input '{name}': malformed tensor ({e})")
  shape = spec.shape
  if shape.rank is not None and value.ndim != shape.rank:
    _abort(context, grpc.StatusCode.INVALID_ARGUMENT,
           f"input '{name}': expects rank {shape.rank} {shape}, got shape {list(value.shape)}")
  if not shape.is_compatible_with(value.shape):
    _abort(context, grpc.StatusCode.INVALID_ARGUMENT,
           f"input '{name}': expects shape {shape}, got {list(value.shape)}")
  if value.size == 0 and shape.rank:
    _abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"input '{name}': empty tensor {list(value.shape)}")
  if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
    _abort(context, grpc.StatusCode.INVALID_ARGUMENT,
           f"input '{name}': {int(np.sum(~np.isfinite(value)))} non-finite values (NaN/Inf)")
  return value


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
  """Predict and GetModelMetadata of TF-Serving's PredictionService over one ServedModel."""

  def __init__(self, model: ServedModel):
    self.model = model

  def _lookup(self, spec, context) -> ServedModel:
    if spec.name != self.model.name:
      _abort(context, grpc.StatusCode.NOT_FOUND,
             f"Servable not found for request: Latest({spec.name or '<empty>'})")
    if spec.HasField("version") and spec.version.value != self.model.version:
      _abort(context, grpc.StatusCode.NOT_FOUND,
             f"Servable not found for request: Specific({spec.name}, {spec.version.value})")
    if spec.version_label:
      _abort(context, grpc.StatusCode.NOT_FOUND, f"Unrecognized servable version label: {spec.version_label}")
    return self.model

  def _fill_spec(self, response_spec, signature_name=None):
    response_spec.name = self.model.name
    response_spec.version.value = self.model.version
    if signature_name is not None:
      response_spec.signature_name = signature_name

  def Predict(self, request, context):  # pylint: disable=invalid-name
    model = self._lookup(request.model_spec, context)
    sig_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
    fn = model.signatures.get(sig_name)
    if fn is None:  # TF-Serving's own code and message (servables/tensorflow/predict_util.cc)
      _abort(context, grpc.StatusCode.FAILED_PRECONDITION,
             f"Serving signature key \"{sig_name}\" not found. (available: {sorted(model.signatures)})")
    specs = fn.structured_input_signature[1]
    missing = sorted(set(specs) - set(request.inputs))
    extra = sorted(set(request.inputs) - set(specs))
    if missing or extra:
      _abort(context, grpc.StatusCode.INVALID_ARGUMENT,
             f"signature '{sig_name}' expects inputs {sorted(specs)}; missing {missing}, unexpected {extra}")
    inputs = {name: _check_input(name, request.inputs[name], specs[name], context) for name in specs}
    wanted = list(request.output_filter) or None
    try:
      outputs = fn(**{k: tf.constant(v) for k, v in inputs.items()})
    except tf.errors.InvalidArgumentError as e:
      _abort(context, grpc.StatusCode.INVALID_ARGUMENT, e.message)
    except (ValueError, TypeError) as e:
      _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(e))
    except tf.errors.OpError as e:
      _abort(context, grpc.StatusCode.INTERNAL, e.message)
    if wanted:
      unknown = sorted(set(wanted) - set(outputs))
      if unknown:
        _abort(context, grpc.StatusCode.INVALID_ARGUMENT,
               f"output_filter: {unknown} not in signature '{sig_name}' outputs {sorted(outputs)}")
    response = predict_pb2.PredictResponse()
    self._fill_spec(response.model_spec, sig_name)
    for key, value in outputs.items():
      if wanted is None or key in wanted:
        response.outputs[key].CopyFrom(tf.make_tensor_proto(value.numpy()))
    return response

  def GetModelMetadata(self, request, context):  # pylint: disable=invalid-name
    model = self._lookup(request.model_spec, context)
    fields = list(request.metadata_field)
    if fields != ["signature_def"]:
      _abort(context, grpc.StatusCode.INVALID_ARGUMENT,
             f"Metadata field(s) {fields} not supported: request exactly ['signature_def']")
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    self._fill_spec(response.model_spec)
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    for key, sig in model.signature_defs.items():
      sig_map.signature_def[key].CopyFrom(sig)
    response.metadata["signature_def"].Pack(sig_map)
    return response


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
  """GetModelStatus: the served version is AVAILABLE (what readiness probes ask)."""

  def __init__(self, model: ServedModel):
    self.model = model

  def GetModelStatus(self, request, context):  # pylint: disable=invalid-name
    spec = request.model_spec
    if spec.name != self.model.name or (spec.HasField("version") and spec.version.value != self.model.version):
      _abort(context, grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {spec.name}")
    response = get_model_status_pb2.GetModelStatusResponse()
    status = response.model_version_status.add()
    status.version = self.model.version
    status.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
    return response


def serve(model_base_path: str, model_name: str, port: int = 8500, host: str = "0.0.0.0",
          max_workers: int = 2):
  """Starts the stand-in server. Returns (grpc.Server, bound port); port 0 picks a free port."""
  model = ServedModel(model_base_path, model_name)
  server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers), options=GRPC_OPTIONS)
  prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionServicer(model), server)
  model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(model), server)
  bound = server.add_insecure_port(f"{host}:{port}")
  if not bound:
    raise OSError(f"cannot bind {host}:{port}")
  server.start()
  return server, bound


def main(argv):
  from absl import flags  # pylint: disable=import-outside-toplevel
  fv = flags.FLAGS
  if len(argv) > 1:
    print(f"error: unexpected arguments {argv[1:]}", file=sys.stderr)
    return 2
  if not fv.model_base_path or not fv.model_name:
    print("error: --model_base_path and --model_name are required", file=sys.stderr)
    return 2
  try:
    server, port = serve(fv.model_base_path, fv.model_name, fv.port, fv.host, fv.max_workers)
  except (FileNotFoundError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(f"vsep-tf dev_server ({STAND_IN}): model '{fv.model_name}' from {fv.model_base_path} "
        f"on {fv.host}:{port}", flush=True)
  done = threading.Event()
  for sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(sig, lambda *_: done.set())
  done.wait()
  server.stop(grace=2).wait()
  return 0


def _define_flags():
  from absl import flags  # pylint: disable=import-outside-toplevel
  flags.DEFINE_string("model_base_path", None, "STAND-IN for TF-Serving, for development: BASE/NAME of an export "
                      "(the highest numeric version is served).")
  flags.DEFINE_string("model_name", None, "Name clients put in model_spec.name.")
  flags.DEFINE_integer("port", 8500, "gRPC port (TF-Serving's default 8500; 0: any free port).")
  flags.DEFINE_string("host", "0.0.0.0", "Address to bind.")
  flags.DEFINE_integer("max_workers", 2, "Request threads.")


def run():
  from absl import app  # pylint: disable=import-outside-toplevel
  _define_flags()
  app.run(main)


if __name__ == "__main__":
  run()
