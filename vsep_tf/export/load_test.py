r"""Serving load test: N concurrent clients send a fixed number of Predict requests to a TF-Serving endpoint (or
the development stand-in, vsep_tf/export/dev_server.py), with malformed requests mixed in.

  python -m vsep_tf.export.dev_server --model_base_path=/tmp/exports/toy --model_name=toy --port=8500 &
  python -m vsep_tf.export.load_test --target=127.0.0.1:8500 --model_name=toy --clients=8 --requests=400 \
      --length=16000 --malformed_every=5

Every client thread has its own gRPC channel. Good requests cycle through a small pool of fixed mixes whose
answers are fetched once, sequentially, before the load: every answer under load must equal its reference
(atol 1e-5), so a malformed or concurrent request disturbing a good one is counted as an error. Every
`malformed_every`-th request (0: none) is malformed (wrong dtype, NaN sample, wrong rank in turn) and must be
answered INVALID_ARGUMENT; it is counted apart. Reports (JSON on stdout) throughput of good requests, latency
p50 / p99 / max (ms) of good requests, errors (must be 0) and malformed requests rejected / not rejected.
Exit code 1 when there is any error or a malformed request was not rejected with INVALID_ARGUMENT.
"""
from __future__ import annotations

import json
import sys
import threading
import time

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from vsep_tf.export.dev_server import GRPC_OPTIONS

MALFORMED_KINDS = ("wrong_dtype", "nan", "wrong_rank")


def _request(model_name: str, signature: str, mix) -> predict_pb2.PredictRequest:
  req = predict_pb2.PredictRequest()
  req.model_spec.name = model_name
  req.model_spec.signature_name = signature
  req.inputs["mix"].CopyFrom(tf.make_tensor_proto(mix))
  return req


def _malformed(kind: str, mix):
  if kind == "wrong_dtype":
    return mix.astype(np.float64)
  if kind == "nan":
    bad = mix.copy()
    bad[0, len(bad[0]) // 2] = np.nan
    return bad
  return mix[0]  # wrong rank


def run_load_test(target: str, model_name: str, clients: int = 4, requests: int = 100, length: int = 16000,
                  malformed_every: int = 5, signature: str = "serving_default", pool: int = 4, seed: int = 0,
                  timeout: float = 60.0) -> dict:
  """Runs the load test against `target`; returns the report (see the module docstring)."""
  rng = np.random.default_rng(seed)
  mixes = [(0.3 * rng.standard_normal([1, length])).astype(np.float32) for _ in range(pool)]
  requests_pb = [_request(model_name, signature, m) for m in mixes]
  malformed_pb = {k: _request(model_name, signature, _malformed(k, mixes[0])) for k in MALFORMED_KINDS}

  channel = grpc.insecure_channel(target, options=GRPC_OPTIONS)
  stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
  references = [tf.make_ndarray(stub.Predict(r, timeout=timeout).outputs["sources"]) for r in requests_pb]
  channel.close()

  lock = threading.Lock()
  counter = [0]
  latencies, errors, rejected, not_rejected = [], [], [], []

  def next_index():
    with lock:
      i = counter[0]
      counter[0] += 1
    return i if i < requests else None

  def client():
    ch = grpc.insecure_channel(target, options=GRPC_OPTIONS)
    st = prediction_service_pb2_grpc.PredictionServiceStub(ch)
    try:
      while (i := next_index()) is not None:
        if malformed_every and i % malformed_every == malformed_every - 1:
          kind = MALFORMED_KINDS[(i // malformed_every) % len(MALFORMED_KINDS)]
          try:
            st.Predict(malformed_pb[kind], timeout=timeout)
            not_rejected.append(f"{kind}: accepted")
          except grpc.RpcError as e:
            (rejected if e.code() == grpc.StatusCode.INVALID_ARGUMENT else not_rejected).append(
                f"{kind}: {e.code().name}")
          continue
        k = i % pool
        t0 = time.perf_counter()
        try:
          out = tf.make_ndarray(st.Predict(requests_pb[k], timeout=timeout).outputs["sources"])
        except grpc.RpcError as e:
          errors.append(f"request {i}: {e.code().name} {e.details()}")
          continue
        dt = time.perf_counter() - t0
        if out.shape != references[k].shape or not np.allclose(out, references[k], atol=1e-5):
          errors.append(f"request {i}: answer differs from its reference")
        latencies.append(dt)
    finally:
      ch.close()

  threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
  t0 = time.perf_counter()
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  wall = time.perf_counter() - t0
  lat_ms = np.asarray(latencies) * 1e3
  return {
      "target": target, "model_name": model_name, "signature": signature, "clients": clients,
      "requests": requests, "length": length, "wall_seconds": round(wall, 3),
      "good_ok": len(latencies), "errors": len(errors), "error_examples": errors[:5],
      "malformed_rejected": len(rejected), "malformed_not_rejected": len(not_rejected),
      "malformed_not_rejected_examples": not_rejected[:5],
      "throughput_rps": round(len(latencies) / wall, 2) if wall > 0 else None,
      "p50_ms": round(float(np.percentile(lat_ms, 50)), 2) if len(lat_ms) else None,
      "p99_ms": round(float(np.percentile(lat_ms, 99)), 2) if len(lat_ms) else None,
      "max_ms": round(float(lat_ms.max()), 2) if len(lat_ms) else None,
  }


def main(argv):
  from absl import flags  # pylint: disable=import-outside-toplevel
  fv = flags.FLAGS
  if len(argv) > 1:
    print(f"error: unexpected arguments {argv[1:]}", file=sys.stderr)
    return 2
  report = run_load_test(fv.target, fv.model_name, fv.clients, fv.requests, fv.length, fv.malformed_every,
                         fv.signature_name, seed=fv.seed, timeout=fv.timeout)
  print(json.dumps(report, indent=1), flush=True)
  return 1 if report["errors"] or report["malformed_not_rejected"] else 0


def _define_flags():
  from absl import flags  # pylint: disable=import-outside-toplevel
  flags.DEFINE_string("target", "127.0.0.1:8500", "host:port of the gRPC endpoint.")
  flags.DEFINE_string("model_name", None, "model_spec.name.")
  flags.DEFINE_string("signature_name", "serving_default", "Signature of the good requests.")
  flags.DEFINE_integer("clients", 4, "Concurrent client threads (one gRPC channel each).")
  flags.DEFINE_integer("requests", 100, "Total requests (good + malformed).")
  flags.DEFINE_integer("length", 16000, "Samples per good request ([1, length] mix).")
  flags.DEFINE_integer("malformed_every", 5, "Every this-many-th request is malformed (0: none).")
  flags.DEFINE_integer("seed", 0, "Seed of the request mixes.")
  flags.DEFINE_float("timeout", 60.0, "Seconds per call.")


def run():
  from absl import app  # pylint: disable=import-outside-toplevel
  _define_flags()
  app.run(main)


if __name__ == "__main__":
  run()
