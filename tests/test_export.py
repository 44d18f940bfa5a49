"""Export: SavedModel (TF-Serving layout, signatures, metadata, parity with eager), TFLite (float32 and quantised
parity), and TF-Serving's gRPC API end to end through the official client stub against the development stand-in
server on 127.0.0.1, malformed requests included."""
import json
import os
import subprocess
import sys
import threading
from concurrent import futures

import grpc
import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import model_service_pb2_grpc

from vsep_tf import audio
from vsep_tf import inference
from vsep_tf.export import client as client_lib
from vsep_tf.export import dev_server
from vsep_tf.export import saved_model as saved_model_lib
from vsep_tf.export import tflite as tflite_lib
from vsep_tf.model_dir import load_separator
from vsep_tf.separators.encoder import EncoderSeparator, build_encoder

CHUNK = 2048  # the separate_chunk (and TFLite) length used here


def _noise(shape, seed=0):
  return (0.3 * np.random.RandomState(seed).randn(*shape)).astype(np.float32)


@pytest.fixture(scope="module")
def separator(tiny_supervised_dir):
  return load_separator(tiny_supervised_dir)


@pytest.fixture(scope="module")
def export_base(separator, tmp_path_factory):
  base = tmp_path_factory.mktemp("exports")
  saved_model_lib.export_saved_model(separator, str(base), "toy", chunk_length=CHUNK)
  return str(base)


@pytest.fixture(scope="module")
def server(export_base):
  srv, port = dev_server.serve(os.path.join(export_base, "toy"), "toy", port=0, host="127.0.0.1")
  yield f"127.0.0.1:{port}"
  srv.stop(grace=None)


@pytest.fixture(scope="module")
def batching(export_base):
  """(DevServer, target) of a second stand-in with server-side batching: batches of up to 4 rows, a long timeout
  (0.2 s) so that concurrent requests surely meet, 8 request threads (a batch holds at most that many)."""
  srv, port = dev_server.serve(os.path.join(export_base, "toy"), "toy", port=0, host="127.0.0.1", max_workers=8,
                               enable_batching=True, max_batch_size=4, batch_timeout_micros=200_000)
  yield srv, f"127.0.0.1:{port}"
  srv.stop(grace=None)
  assert not srv.batcher._thread.is_alive()  # pylint: disable=protected-access  # stopped with the server


@pytest.fixture(scope="module")
def batching_server(batching):
  return batching[1]


def _batched_requests(batcher) -> int:
  """Requests the batcher has run so far (merged or alone)."""
  return sum(size * count for size, count in batcher.batch_sizes.items())


# ------------------------------------------------------------------------------------------ SavedModel
def test_saved_model_layout_variables_and_parity(separator, export_base):
  path = os.path.join(export_base, "toy", "1")
  assert sorted(os.listdir(os.path.join(export_base, "toy"))) == ["1"]  # no temporaries left
  assert {"saved_model.pb", "variables", "assets"} <= set(os.listdir(path))
  # tf.Module does not see Keras 3 weights; the SavedModel must still hold every one of them.
  module = saved_model_lib.SeparatorModule(separator, CHUNK)
  saved = [n for n, _ in tf.train.list_variables(os.path.join(path, "variables", "variables"))
           if n != "_CHECKPOINTABLE_OBJECT_GRAPH"]
  assert len(saved) == len(separator.encoder.weights) == len(saved_model_lib._variables(module.models)) > 0
  loaded = tf.saved_model.load(path)
  assert set(loaded.signatures) == {"serving_default", "separate_chunk", "metadata"}
  x = _noise([2, 3001])
  eager = separator.separate(x).numpy()
  np.testing.assert_allclose(loaded.signatures["serving_default"](mix=tf.constant(x))["sources"], eager, atol=1e-5)
  chunk = _noise([1, CHUNK], seed=1)
  np.testing.assert_allclose(loaded.signatures["separate_chunk"](mix=tf.constant(chunk))["sources"],
                             separator.separate(chunk).numpy(), atol=1e-5)
  with pytest.raises(tf.errors.InvalidArgumentError, match="NaN or Inf"):
    bad = x.copy()
    bad[0, 7] = np.nan
    loaded.signatures["serving_default"](mix=tf.constant(bad))
  with pytest.raises(tf.errors.InvalidArgumentError, match="empty"):
    loaded.signatures["serving_default"](mix=tf.zeros([1, 0]))
  # The loaded export is a Separator: chunked separation matches eager.
  exported = saved_model_lib.SavedModelSeparator(os.path.join(export_base, "toy"))
  long = _noise([3 * CHUNK], seed=2)
  np.testing.assert_allclose(exported.separate_long(long, CHUNK, 512), separator.separate_long(long, CHUNK, 512),
                             atol=1e-5)


def test_metadata_signature_and_asset(separator, export_base):
  loaded = tf.saved_model.load(os.path.join(export_base, "toy", "1"))
  meta = {k: v.numpy() for k, v in loaded.signatures["metadata"]().items()}
  assert [s.decode() for s in meta["source_names"]] == list(separator.source_names)
  assert int(meta["sample_rate"]) == separator.sample_rate == 14700
  assert int(meta["chunk_length"]) == CHUNK and int(meta["num_sources"]) == 4
  assert int(meta["chunk_overlap"]) == min(separator.chunk_overlap, CHUNK // 2)
  assert meta["mix"].decode() == separator.mix and meta["method"].decode() == "supervised"
  with open(os.path.join(export_base, "toy", "1", "assets", "metadata.json"), encoding="utf-8") as f:
    asset = json.load(f)
  assert asset == saved_model_lib.read_metadata(os.path.join(export_base, "toy"))
  assert asset["source_names"] == list(separator.source_names) and asset["chunk_length"] == CHUNK


def test_versions_are_atomic_and_never_clobbered(separator, tmp_path):
  base = str(tmp_path)
  with pytest.raises(ValueError, match="holds no TensorFlow model"):
    saved_model_lib.SeparatorModule(type("Empty", (), {"separate": None})(), CHUNK)
  p1 = saved_model_lib.export_saved_model(separator, base, "m", chunk_length=CHUNK)
  p2 = saved_model_lib.export_saved_model(separator, base, "m", chunk_length=CHUNK)
  assert (os.path.basename(p1), os.path.basename(p2)) == ("1", "2")
  with pytest.raises(FileExistsError):
    saved_model_lib.export_saved_model(separator, base, "m", version=1, chunk_length=CHUNK)
  assert saved_model_lib.version_dir(os.path.join(base, "m")) == p2
  assert sorted(os.listdir(os.path.join(base, "m"))) == ["1", "2"]


def test_saved_model_cli_show_runs_clean(export_base):
  path = os.path.join(export_base, "toy", "1")
  r = subprocess.run([sys.executable, "-m", "tensorflow.python.tools.saved_model_cli", "show", "--all",
                      "--dir", path], capture_output=True, text=True, timeout=300,
                     env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="-1"))
  assert r.returncode == 0, r.stderr
  for expected in ("signature_def['serving_default']", "signature_def['separate_chunk']",
                   "signature_def['metadata']", f"shape: (1, {CHUNK})", "shape: (-1, 4, -1)"):
    assert expected in r.stdout


# ---------------------------------------------------------------------------------------------- TFLite
def test_tflite_float32_parity(separator, export_base, tmp_path):
  paths = tflite_lib.export_tflite(os.path.join(export_base, "toy"), str(tmp_path), quantizations=("none",))
  lite = tflite_lib.TFLiteSeparator(paths["none"])
  assert lite.source_names == separator.source_names and lite.chunk_length == CHUNK
  x = _noise([2, CHUNK], seed=3)
  np.testing.assert_allclose(lite.separate(x), separator.separate(x).numpy(), atol=1e-5)
  long = _noise([3 * CHUNK + 100], seed=4)  # through separate_long: chunks of the fixed length
  np.testing.assert_allclose(lite.separate_long(long, CHUNK, 512), separator.separate_long(long, CHUNK, 512),
                             atol=1e-5)


def test_tflite_quantised_parity(tmp_path):
  """A wider encoder (weights big enough for TFLite to quantise: >= 1024 elements). Dynamic-range int8 and
  float16 variants stay within 5% of the output scale of the float32 model."""
  encoder = build_encoder(4, "mean", num_blocks=1, num_layers=4, residual_channels=32, skip_channels=64)
  sep = EncoderSeparator(encoder, ("a", "b", "c", "d"), 16000, method="untrained")
  saved_model_lib.export_saved_model(sep, str(tmp_path), "wide", chunk_length=CHUNK)
  paths = tflite_lib.export_tflite(os.path.join(str(tmp_path), "wide"), str(tmp_path / "lite"),
                                   quantizations=("none", "dynamic", "float16"))
  x = _noise([1, CHUNK], seed=5)
  eager = sep.separate(x).numpy()
  scale = np.abs(eager).max()
  outs = {q: tflite_lib.TFLiteSeparator(p).separate(x) for q, p in paths.items()}
  np.testing.assert_allclose(outs["none"], eager, atol=1e-5 * scale)
  for q in ("dynamic", "float16"):
    err = np.abs(outs[q] - eager).max() / scale
    assert err < 0.05, (q, err)
  assert os.path.getsize(paths["dynamic"]) < 0.5 * os.path.getsize(paths["none"])
  assert os.path.getsize(paths["float16"]) < 0.75 * os.path.getsize(paths["none"])


# ----------------------------------------------------------------------------------------- TF-Serving
def test_grpc_round_trip_file_to_file(separator, server, tmp_path):
  remote = client_lib.ServingSeparator(server, "toy")  # the official PredictionServiceStub underneath
  assert remote.source_names == separator.source_names and remote.sample_rate == separator.sample_rate
  assert remote.chunk_length == CHUNK
  x = _noise([5 * CHUNK], seed=6)
  np.testing.assert_allclose(remote.separate_long(x, batch_size=2),
                             separator.separate_long(x, CHUNK, remote.chunk_overlap),
                             atol=1e-5)
  # File -> gRPC -> files, as `python export/serving_client.py` does, equals the local CLI path.
  src = str(tmp_path / "mix.wav")
  audio.write_audio(src, _noise([24000, 2], seed=7), 16000, subtype="FLOAT")
  got = inference.AudioSeparator(remote).separate_file(src, str(tmp_path / "remote"), subtype="FLOAT")
  ref = inference.AudioSeparator(separator, chunk_seconds=CHUNK / separator.sample_rate).separate_file(
      src, str(tmp_path / "local"), subtype="FLOAT")
  for name in separator.source_names:
    np.testing.assert_allclose(sf.read(got[name])[0], sf.read(ref[name])[0], atol=1e-5)
  # The chunk signature (fixed [1, chunk]) serves too.
  chunked = client_lib.ServingSeparator(server, "toy", signature_name="separate_chunk")
  np.testing.assert_allclose(chunked.separate(x[None, :CHUNK]), separator.separate(x[None, :CHUNK]).numpy(),
                             atol=1e-5)


def test_grpc_metadata_and_status(server):
  remote = client_lib.ServingSeparator(server, "toy")
  req = get_model_metadata_pb2.GetModelMetadataRequest()
  req.model_spec.name = "toy"
  req.metadata_field.append("signature_def")
  resp = remote.stub.GetModelMetadata(req)
  sig_map = get_model_metadata_pb2.SignatureDefMap()
  resp.metadata["signature_def"].Unpack(sig_map)
  assert set(sig_map.signature_def) == {"serving_default", "separate_chunk", "metadata"}
  assert resp.model_spec.version.value == 1
  status_req = get_model_status_pb2.GetModelStatusRequest()
  status_req.model_spec.name = "toy"
  status = model_service_pb2_grpc.ModelServiceStub(remote.channel).GetModelStatus(status_req)
  assert status.model_version_status[0].state == get_model_status_pb2.ModelVersionStatus.AVAILABLE


@pytest.mark.parametrize("which", ["server", "batching_server"])
def test_malformed_requests_then_a_good_one(separator, which, request):
  """Every malformed request gets its code, with or without batching (rejected by the checks before queueing)."""
  remote = client_lib.ServingSeparator(request.getfixturevalue(which), "toy")
  batcher = request.getfixturevalue("batching")[0].batcher if which == "batching_server" else None
  queued = _batched_requests(batcher) if batcher else 0
  x = _noise([1, 3000], seed=8)
  nan = x.copy()
  nan[0, 10] = np.nan
  cases = [
      ("wrong dtype", "serving_default", {"mix": x.astype(np.float64)}, grpc.StatusCode.INVALID_ARGUMENT),
      ("wrong rank", "serving_default", {"mix": x[0]}, grpc.StatusCode.INVALID_ARGUMENT),
      ("missing input", "serving_default", {}, grpc.StatusCode.INVALID_ARGUMENT),
      ("unexpected input", "serving_default", {"mix": x, "gain": x}, grpc.StatusCode.INVALID_ARGUMENT),
      # TF-Serving answers an unknown signature with FAILED_PRECONDITION (predict_util.cc); so does the stand-in.
      ("unknown signature", "separate_faster", {"mix": x}, grpc.StatusCode.FAILED_PRECONDITION),
      ("NaN", "serving_default", {"mix": nan}, grpc.StatusCode.INVALID_ARGUMENT),
      ("wrong chunk length", "separate_chunk", {"mix": x}, grpc.StatusCode.INVALID_ARGUMENT),
      ("empty", "serving_default", {"mix": np.zeros([1, 0], np.float32)}, grpc.StatusCode.INVALID_ARGUMENT),
  ]
  for what, signature, inputs, code in cases:
    with pytest.raises(grpc.RpcError) as e:
      remote.stub.Predict(remote.request(signature, inputs), timeout=30)
    assert e.value.code() == code, (what, e.value.code(), e.value.details())
  unknown = remote.request("serving_default", {"mix": x})
  unknown.model_spec.name = "not_served"
  with pytest.raises(grpc.RpcError) as e:
    remote.stub.Predict(unknown, timeout=30)
  assert e.value.code() == grpc.StatusCode.NOT_FOUND
  wrong_version = remote.request("serving_default", {"mix": x})
  wrong_version.model_spec.version.value = 7
  with pytest.raises(grpc.RpcError) as e:
    remote.stub.Predict(wrong_version, timeout=30)
  assert e.value.code() == grpc.StatusCode.NOT_FOUND
  if batcher:
    assert _batched_requests(batcher) == queued  # none of them reached the batch queue
  # Still serving.
  np.testing.assert_allclose(remote.separate(x), separator.separate(x).numpy(), atol=1e-5)
  if batcher:
    assert _batched_requests(batcher) == queued + 1 and batcher.split_retries == 0


def test_batching_concurrent_requests_get_their_own_answers(server, batching):
  """Concurrent requests to the batching server: [1, 3000] mixes (merged, up to 4 rows a call), [1, 2000] ones
  (another batch key), a [2, 3000] one (2 rows), separate_chunk and metadata (never batched). Every answer equals
  the unbatched server's (atol 1e-5); at least one call merged several requests, none more than 4 rows."""
  srv, target = batching
  cases = ([("serving_default", _noise([1, 3000], seed=20 + i)) for i in range(6)]
           + [("serving_default", _noise([1, 2000], seed=30 + i)) for i in range(2)]
           + [("serving_default", _noise([2, 3000], seed=40)), ("separate_chunk", _noise([1, CHUNK], seed=41)),
              ("metadata", None)])

  def predict(remote, sig, x):
    return remote.predict(sig, {} if x is None else {"mix": x})

  plain = client_lib.ServingSeparator(server, "toy")
  expected = [predict(plain, sig, x) for sig, x in cases]
  remote = client_lib.ServingSeparator(target, "toy")
  before, sizes_before = _batched_requests(srv.batcher), dict(srv.batcher.batch_sizes)
  barrier = threading.Barrier(len(cases))

  def call(case):
    barrier.wait()
    return predict(remote, *case)

  with futures.ThreadPoolExecutor(len(cases)) as pool:
    got = list(pool.map(call, cases))
  for (sig, x), want, answer in zip(cases, expected, got):
    assert set(answer) == set(want), sig
    for key, value in want.items():
      if value.dtype.kind in "fc":
        assert answer[key].shape == value.shape, (sig, key)
        np.testing.assert_allclose(answer[key], value, atol=1e-5, err_msg=f"{sig} {key} {x.shape}")
      else:
        np.testing.assert_array_equal(answer[key], value)
  new = {n: c - sizes_before.get(n, 0) for n, c in srv.batcher.batch_sizes.items() if c > sizes_before.get(n, 0)}
  assert _batched_requests(srv.batcher) - before == 9  # the serving_default ones; chunk / metadata ran alone
  assert max(new) > 1 and max(new) <= 4, new
  assert srv.batcher.split_retries == 0


def test_batcher_retries_a_failed_batch_one_by_one_and_stops():
  """A merged call that raises (one bad row) is rerun request by request: only the bad request fails. key()
  batches only inputs with an unknown axis 0 of at most max_batch_size rows. close() stops the worker thread and
  answers requests still queued with BatcherStopped."""
  def fn(mix):
    if tf.reduce_max(mix) > 100:
      raise tf.errors.InvalidArgumentError(None, None, "too loud")
    return {"double": 2 * mix, "total": tf.reduce_sum(mix, axis=1)}

  batcher = dev_server.Batcher(max_batch_size=3, batch_timeout_micros=10_000_000)  # runs when 3 rows are queued
  spec = {"mix": tf.TensorSpec([None, None], tf.float32)}
  xs = [_noise([1, 50], seed=50), np.full([1, 50], 1000.0, np.float32), _noise([1, 50], seed=51)]
  key_rows = batcher.key("serving_default", spec, {"mix": xs[0]})
  assert key_rows[1] == 1 and batcher.key("serving_default", spec, {"mix": _noise([1, 60])})[0] != key_rows[0]
  assert batcher.key("separate_chunk", {"mix": tf.TensorSpec([1, 50], tf.float32)}, {"mix": xs[0]}) is None
  assert batcher.key("metadata", {}, {}) is None
  assert batcher.key("serving_default", spec, {"mix": _noise([4, 50])}) is None  # more rows than a batch
  with futures.ThreadPoolExecutor(3) as pool:
    results = [pool.submit(batcher.run, key_rows, fn, {"mix": x}) for x in xs]
    with pytest.raises(tf.errors.InvalidArgumentError, match="too loud"):
      results[1].result(timeout=30)
    for i in (0, 2):
      np.testing.assert_allclose(results[i].result()["double"], 2 * xs[i], atol=1e-6)
      np.testing.assert_allclose(results[i].result()["total"], xs[i].sum(axis=1), atol=1e-5)
  assert batcher.batch_sizes == {3: 1} and batcher.split_retries == 1
  with futures.ThreadPoolExecutor(1) as pool:
    waiting = pool.submit(batcher.run, key_rows, fn, {"mix": xs[0]})  # waits for 2 more rows (10 s)
    while not batcher._queue:  # pylint: disable=protected-access
      threading.Event().wait(0.01)
    batcher.close()
    with pytest.raises(dev_server.BatcherStopped):
      waiting.result(timeout=30)
  assert not batcher._thread.is_alive()  # pylint: disable=protected-access
  with pytest.raises(dev_server.BatcherStopped):
    batcher.run(key_rows, fn, {"mix": xs[0]})


# ------------------------------------------------------------------------------------------- Langevin
@pytest.mark.slow
def test_langevin_exports_its_loop(tiny_priors_dir, tmp_path):
  """The annealed Langevin loop, gradients included, runs inside the exported graph (minutes: slow)."""
  sep = load_separator(tiny_priors_dir, ["--langevin_levels=2", "--langevin_steps_per_level=2"])
  sep.use_xla(False)
  path = saved_model_lib.export_saved_model(sep, str(tmp_path), "langevin", chunk_length=1024)
  saved = [n for n, _ in tf.train.list_variables(os.path.join(path, "variables", "variables"))
           if n != "_CHECKPOINTABLE_OBJECT_GRAPH"]
  assert len(saved) == sum(len(p.weights) for p in sep.priors.values())
  x = _noise([1, 512], seed=9)
  exported = saved_model_lib.SavedModelSeparator(path)
  assert exported.source_names == sep.source_names and exported.meta["method"] == "langevin"
  np.testing.assert_allclose(exported.separate(x).numpy(), sep.separate(x).numpy(), atol=1e-4)
  ops = {n.op for f in exported.model.signatures["serving_default"].graph.as_graph_def().library.function
         for n in f.node_def}
  assert "While" in ops or "StatelessWhile" in ops


# ------------------------------------------------------------------------------------------- load test
@pytest.mark.parametrize("which", ["server", "batching_server"])
def test_load_test_tool_concurrent_with_malformed(which, request):
  """A few concurrent requests with malformed ones mixed in, with and without server-side batching: no errors
  (every answer equals its single-client answer), the malformed ones INVALID_ARGUMENT."""
  from vsep_tf.export import load_test  # pylint: disable=import-outside-toplevel
  report = load_test.run_load_test(request.getfixturevalue(which), "toy", clients=3, requests=12, length=3000,
                                   malformed_every=3, pool=2)
  assert report["errors"] == 0, report["error_examples"]
  assert report["good_ok"] == 8 and report["malformed_rejected"] == 4 and report["malformed_not_rejected"] == 0
  assert report["p50_ms"] > 0 and report["p99_ms"] >= report["p50_ms"] and report["throughput_rps"] > 0
