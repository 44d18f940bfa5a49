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
read once at start (no version polling, no REST API, no model config file). Errors follow
TF-Serving's codes (tensorflow_serving/servables/tensorflow/predict_util.cc): NOT_FOUND for an unknown model name
or version; FAILED_PRECONDITION for an unknown signature (as TF-Serving: "Serving signature key ... not found");
INVALID_ARGUMENT for missing / unexpected inputs, a wrong dtype or shape, NaN/Inf or empty input, an unknown
output_filter entry, and any InvalidArgumentError raised by the graph. The stand-in checks dtype, shape and
finiteness before running the graph (clearer messages); the real server gets INVALID_ARGUMENT for the same
requests from the graph itself (typed placeholders, and the export's in-graph NaN/Inf and length checks).
A bad request never stops the server.

Server-side batching (opt-in, --enable_batching; TF-Serving's --enable_batching with a batching parameters file is
the model): concurrent Predict requests to the same signature whose inputs have the same shape apart from axis 0
(e.g. mix [1, T] with the same T) wait in a queue, are concatenated along axis 0 into ONE call of the signature
(at most --max_batch_size rows; a batch closes when full or --batch_timeout_micros after its first request
arrived) and each request gets its own rows of every output back. Requests are checked (the same checks, the
same INVALID_ARGUMENT answers) BEFORE they are queued. Not batched, run alone as without batching: signatures
whose inputs have a fixed axis 0 (separate_chunk [1, chunk]) or no inputs (metadata), and requests of more rows
than --max_batch_size. If a merged call fails (or an output has no batch axis) every request of that batch is
retried alone, so one bad request fails only itself. It assumes, as TF-Serving's batching does, that the
signature treats the rows of axis 0 independently. Differences from TF-Serving: one batching thread
(num_batch_threads 1), no max_enqueued_batches (the queue is bounded by the --max_workers request threads, one
per in-flight request: a batch holds at most --max_workers requests), no padding or allowed_batch_sizes, and
requests of different shapes form separate batches instead of failing. Server.stop() stops the batching thread
(requests still queued are answered UNAVAILABLE).

In production serve the same directory with the real server, e.g.
  docker run -p 8500:8500 -v "$PWD/exports:/models" -e MODEL_NAME=toy tensorflow/serving
"""
from __future__ import annotations

import collections
import os
import signal
import sys
import threading
import time
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


def _run_signature(fn, inputs: dict) -> dict:
  """One call of a signature on numpy inputs: its outputs as numpy ({name: array})."""
  return {k: v.numpy() for k, v in fn(**{k: tf.constant(v) for k, v in inputs.items()}).items()}


class BatcherStopped(RuntimeError):
  """The batcher is stopped (the server is stopping): the request is answered UNAVAILABLE."""


class _Task:  # pylint: disable=too-few-public-methods
  """One queued request: its batch key, rows (its axis-0 size), signature, checked inputs and its answer."""

  def __init__(self, key, rows: int, fn, inputs: dict):
    self.key, self.rows, self.fn, self.inputs = key, rows, fn, inputs
    self.arrived = time.monotonic()
    self.future = futures.Future()


class Batcher:
  """Server-side batching: one worker thread merges queued requests of the same key into one signature call.

  `key` says whether a request can be batched; `run` queues it and blocks until its own rows of the outputs
  (or its error) are back. Statistics: `batch_sizes` {requests merged into one call: number of such calls}
  and `split_retries` (merged calls that failed and were rerun one request at a time)."""

  def __init__(self, max_batch_size: int = 8, batch_timeout_micros: int = 2000):
    if max_batch_size < 1 or batch_timeout_micros < 0:
      raise ValueError(f"max_batch_size >= 1 and batch_timeout_micros >= 0 required, got {max_batch_size}, "
                       f"{batch_timeout_micros}")
    self.max_batch_size = int(max_batch_size)
    self.timeout = batch_timeout_micros / 1e6
    self.batch_sizes = collections.Counter()
    self.split_retries = 0
    self._queue = []  # _Task, in arrival order
    self._stopped = False
    self._cond = threading.Condition()
    self._thread = threading.Thread(target=self._work, name="dev_server_batcher", daemon=True)
    self._thread.start()

  def key(self, sig_name: str, specs: dict, inputs: dict):
    """(key, rows) if the request can join a batch, else None: every input spec has an unknown axis 0 and every
    input the same axis-0 size `rows` (1 <= rows <= max_batch_size); key = signature + the shapes past axis 0."""
    rows = {v.shape[0] if v.ndim else None for v in inputs.values()}
    if not specs or len(rows) != 1 or any(s.shape.rank in (None, 0) or s.shape[0] is not None
                                           for s in specs.values()):
      return None
    (n,) = rows
    if n is None or not 1 <= n <= self.max_batch_size:
      return None
    return (sig_name, tuple((name, inputs[name].shape[1:]) for name in sorted(inputs))), n

  def run(self, key_rows, fn, inputs: dict) -> dict:
    """Queues the request (key_rows from `key`) and returns its outputs ({name: numpy}); raises its error."""
    task = _Task(*key_rows, fn, inputs)
    with self._cond:
      if self._stopped:
        raise BatcherStopped("the server is stopping")
      self._queue.append(task)
      self._cond.notify()
    return task.future.result()

  def close(self):
    """Stops the worker (after the batch it is running); requests still queued get BatcherStopped."""
    with self._cond:
      self._stopped = True
      pending, self._queue = self._queue, []
      self._cond.notify_all()
    for task in pending:
      task.future.set_exception(BatcherStopped("the server is stopping"))
    self._thread.join()

  def _next_batch(self):
    """Blocks until a batch is due: the oldest request and the later ones of its key, up to max_batch_size rows,
    once they fill a batch or batch_timeout after the oldest arrived. None when stopped."""
    with self._cond:
      while not self._queue and not self._stopped:
        self._cond.wait()
      if self._stopped:
        return None
      first = self._queue[0]
      while not self._stopped:
        remaining = first.arrived + self.timeout - time.monotonic()
        if remaining <= 0 or sum(t.rows for t in self._queue if t.key == first.key) >= self.max_batch_size:
          break
        self._cond.wait(remaining)
      if self._stopped:
        return None
      batch, rows = [], 0
      for task in self._queue:
        if task.key == first.key:
          if rows + task.rows > self.max_batch_size:
            break
          batch.append(task)
          rows += task.rows
      self._queue = [t for t in self._queue if all(t is not b for b in batch)]
      return batch

  def _work(self):
    while (batch := self._next_batch()) is not None:
      self._execute(batch)

  @staticmethod
  def _run_alone(task):
    try:
      task.future.set_result(_run_signature(task.fn, task.inputs))
    except Exception as e:  # pylint: disable=broad-except  # answered by the request's own thread
      task.future.set_exception(e)

  def _execute(self, batch):
    self.batch_sizes[len(batch)] += 1
    if len(batch) == 1:
      self._run_alone(batch[0])
      return
    total = sum(t.rows for t in batch)
    try:
      outputs = _run_signature(batch[0].fn, {name: np.concatenate([t.inputs[name] for t in batch])
                                             for name in batch[0].inputs})
      if any(np.ndim(v) == 0 or v.shape[0] != total for v in outputs.values()):
        raise ValueError("an output has no batch axis")
    except Exception:  # pylint: disable=broad-except  # one bad request must not fail the others: rerun alone
      self.split_retries += 1
      for task in batch:
        self._run_alone(task)
      return
    start = 0
    for task in batch:
      task.future.set_result({k: v[start:start + task.rows] for k, v in outputs.items()})
      start += task.rows


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
  """Predict and GetModelMetadata of TF-Serving's PredictionService over one ServedModel (Predict through
  `batcher` when one is given and the request can be batched)."""

  def __init__(self, model: ServedModel, batcher: Batcher = None):
    self.model = model
    self.batcher = batcher

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
    key_rows = self.batcher.key(sig_name, specs, inputs) if self.batcher is not None else None
    try:
      outputs = self.batcher.run(key_rows, fn, inputs) if key_rows else _run_signature(fn, inputs)
    except BatcherStopped as e:
      _abort(context, grpc.StatusCode.UNAVAILABLE, str(e))
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
        response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
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


class DevServer:
  """The running grpc.Server (its methods are delegated) and its Batcher (None without batching): stop() also
  stops the batching thread, after the grace period, and returns once it has stopped."""

  def __init__(self, server: grpc.Server, batcher: Batcher = None):
    self.server = server
    self.batcher = batcher

  def stop(self, grace=None) -> threading.Event:
    event = self.server.stop(grace)
    if self.batcher is not None:
      event.wait()
      self.batcher.close()
    return event

  def __getattr__(self, name):
    return getattr(self.server, name)


def serve(model_base_path: str, model_name: str, port: int = 8500, host: str = "0.0.0.0",
          max_workers: int = 2, enable_batching: bool = False, max_batch_size: int = 8,
          batch_timeout_micros: int = 2000):
  """Starts the stand-in server. Returns (DevServer, bound port); port 0 picks a free port. enable_batching:
  server-side batching of Predict (module docstring)."""
  model = ServedModel(model_base_path, model_name)
  batcher = Batcher(max_batch_size, batch_timeout_micros) if enable_batching else None
  server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers), options=GRPC_OPTIONS)
  prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionServicer(model, batcher), server)
  model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(model), server)
  bound = server.add_insecure_port(f"{host}:{port}")
  if not bound:
    if batcher is not None:
      batcher.close()
    raise OSError(f"cannot bind {host}:{port}")
  server.start()
  return DevServer(server, batcher), bound


def main(argv):
  from absl import flags  # pylint: disable=import-outside-toplevel
  fv = flags.FLAGS
  if len(argv) > 1:
    print(f"error: unexpected arguments {argv[1:]}", file=sys.stderr)
    return 2
  if not fv.model_base_path or not fv.model_name:
    print("error: --model_base_path and --model_name are required", file=sys.stderr)
    return 2
  if fv.max_batch_size < 1 or fv.batch_timeout_micros < 0:
    print("error: --max_batch_size >= 1 and --batch_timeout_micros >= 0 required", file=sys.stderr)
    return 2
  try:
    server, port = serve(fv.model_base_path, fv.model_name, fv.port, fv.host, fv.max_workers,
                         fv.enable_batching, fv.max_batch_size, fv.batch_timeout_micros)
  except (FileNotFoundError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  batching = (f", batching (max_batch_size={fv.max_batch_size}, batch_timeout_micros={fv.batch_timeout_micros}, "
              f"max_workers={fv.max_workers})" if fv.enable_batching else "")
  print(f"vsep-tf dev_server ({STAND_IN}): model '{fv.model_name}' from {fv.model_base_path} "
        f"on {fv.host}:{port}{batching}", flush=True)
  if fv.enable_batching and fv.max_workers < fv.max_batch_size:
    print(f"note: a batch holds at most --max_workers={fv.max_workers} requests (one request thread each); "
          f"raise --max_workers to fill batches of --max_batch_size={fv.max_batch_size}", file=sys.stderr)
  done = threading.Event()
  for sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(sig, lambda *_: done.set())
  done.wait()
  server.stop(grace=2).wait()
  if server.batcher is not None:
    print(f"batches (requests per signature call: calls): {dict(sorted(server.batcher.batch_sizes.items()))}, "
          f"merged calls retried one by one: {server.batcher.split_retries}", flush=True)
  return 0


def _define_flags():
  from absl import flags  # pylint: disable=import-outside-toplevel
  flags.DEFINE_string("model_base_path", None, "STAND-IN for TF-Serving, for development: BASE/NAME of an export "
                      "(the highest numeric version is served).")
  flags.DEFINE_string("model_name", None, "Name clients put in model_spec.name.")
  flags.DEFINE_integer("port", 8500, "gRPC port (TF-Serving's default 8500; 0: any free port).")
  flags.DEFINE_string("host", "0.0.0.0", "Address to bind.")
  flags.DEFINE_integer("max_workers", 2, "Request threads (also the most requests in flight, so the most "
                       "requests one batch can hold).")
  flags.DEFINE_boolean("enable_batching", False, "Server-side batching of concurrent Predict requests of the same "
                       "signature and shape past axis 0 into one call (as TF-Serving's --enable_batching).")
  flags.DEFINE_integer("max_batch_size", 8, "With --enable_batching: most rows (axis 0) in one batched call.")
  flags.DEFINE_integer("batch_timeout_micros", 2000, "With --enable_batching: longest wait, after the first "
                       "request of a batch arrived, for more requests before the batch runs.")


def run():
  from absl import app  # pylint: disable=import-outside-toplevel
  _define_flags()
  app.run(main)


if __name__ == "__main__":
  run()
