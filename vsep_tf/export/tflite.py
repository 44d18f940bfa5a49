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
from vsep_tf.separators.base import Separator, channels_batch, separate_fixed_rows

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


# Separators whose SavedModel graphs use ops outside TFLite's builtins (measured: the converter fails on them).
NOT_CONVERTIBLE = {
    "spectral": "its SavedModel holds the MAP fit (complex RFFT / IRFFT slices, GELU's derivative: ops TFLite's "
                "builtins lack); convert its model directory instead (--model_dir=DIR, "
                "export_model_tflite): the one-pass graph of its amortised encoder",
    "harmonic": "its SavedModel's STFT is complex (RFFT / IRFFT, ops TFLite's builtins lack); convert its model "
                "directory instead (--model_dir=DIR, export_model_tflite): the same separator over a real DFT"}

def _frozen_chunk_module(saved_model_dir: str):
  """A tf.Module whose `separate_chunk` is the export's chunk signature with its variables frozen."""
  frozen, chunk = frozen_chunk_function(saved_model_dir)

  class Frozen(tf.Module):

    @tf.function(input_signature=[tf.TensorSpec([1, chunk], tf.float32, name="mix")])
    def separate_chunk(self, mix):
      return {"sources": frozen(mix=mix)[0]}

  return Frozen(), chunk


def _convert_module(module, quantize: str) -> bytes:
  """The .tflite flatbuffer of `module.separate_chunk` (a tf.function over constants only), saved and converted."""
  if quantize not in QUANTIZATIONS:
    raise ValueError(f"quantize must be one of {sorted(QUANTIZATIONS)}, got {quantize!r}")
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
  return _convert_module(module, quantize)


# ------------------------------------------- spectral and harmonic separators: graphs built from the model directory
ONE_PASS = "one_pass"


def one_pass_models(separator, magnitude):
  """The frame models V_k [B, N, F, bins] of the spectral separator's MAP fit started as in its source_models
  (amortised encoder, the priors' own encoders, or zero) with no iterations: its one-pass estimate. Calls the
  separator's encoder and its priors' log_shape only (whatever their architecture)."""
  x = tf.convert_to_tensor(magnitude, tf.float32)
  priors = list(separator.priors.values())
  z, a = separator.initial_latents(x)  # the fit's own start (a subset of the encoder's classes included)
  log_shapes = tf.stack([p.log_shape(z[:, k]) for k, p in enumerate(priors)], axis=1)
  return tf.exp(a[..., None] + log_shapes)


# The magnitude floor of the MISI rounds in the TFLite graph: masks.EPS (1e-10) is 0 in float16, so a float16
# model's silent bins gave 0 / 0 = NaN (measured); 1e-6 survives float16 and moves no audible bin.
MISI_FLOOR = 1e-6


def dft_separate(separator, mix, frame_models, mid: bool):
  """mix [C, T] (T static) -> sources [C, N, T] in TFLite builtins: real-DFT STFT (signal_dft), magnitude frame
  models -> ratio masks on every channel's STFT, overlap-add ISTFT; no complex tensors. frame_models: magnitudes
  [B, F, bins] -> models [B, N, F, bins]. mid: one set of masks from the channels' mean (the spectral separator's
  _separate_channels), else every row its own mix (its `separate`)."""
  from vsep_tf import signal_dft  # pylint: disable=import-outside-toplevel
  from vsep_tf.separators.masks import ratio_masks, to_sum_mix  # pylint: disable=import-outside-toplevel
  n_fft, hop = separator.n_fft, separator.hop
  # An int32 0 that the converter cannot evaluate, so the DFT bases are computed in the graph, not stored as
  # (quantisable) weights: min(channels, 0) where the channel axis is dynamic; "a sample above +inf" (never true,
  # not even for inf or NaN) where the input's shape is static.
  zero = (tf.minimum(tf.shape(mix)[0], 0) if mix.shape[0] is None
          else tf.cast(tf.reduce_any(mix > float("inf")), tf.int32))
  bases = signal_dft.dft_bases(n_fft, zero=zero)
  re, im = signal_dft.stft(to_sum_mix(mix, separator.mix, separator.num_sources), n_fft, hop, bases=bases)
  if mid:
    re_x, im_x = tf.reduce_mean(re, axis=0, keepdims=True), tf.reduce_mean(im, axis=0, keepdims=True)
  else:
    re_x, im_x = re, im
  magnitude = tf.sqrt(tf.square(re_x) + tf.square(im_x))                              # [1 or C, F, bins]
  masks = ratio_masks(frame_models(magnitude), separator.settings["mask_power"])     # [1 or C, N, F, bins]
  re_k, im_k = masks * re[:, None], masks * im[:, None]
  sources = signal_dft.istft(re_k, im_k, n_fft, hop, length=mix.shape[-1], bases=bases)
  iterations = int(separator.settings.get("phase_iterations", 0))
  if not iterations:
    return sources
  # masks.misi in real arithmetic, its rounds unrolled (a static count; no control flow for the interpreter).
  total = to_sum_mix(mix, separator.mix, separator.num_sources)[:, None]               # [C, 1, T]
  target = tf.sqrt(tf.square(re_k) + tf.square(im_k))

  def share(y):  # the mixture error shared equally
    return y + (total - tf.reduce_sum(y, axis=1, keepdims=True)) / float(separator.num_sources)

  for _ in range(iterations):
    re_y, im_y = signal_dft.stft(share(sources), n_fft, hop, bases=bases)
    scale = target / tf.maximum(tf.sqrt(tf.square(re_y) + tf.square(im_y)), MISI_FLOOR)
    sources = signal_dft.istft(re_y * scale, im_y * scale, n_fft, hop, length=mix.shape[-1], bases=bases)
  return share(sources)


def one_pass_separate(separator, mix):
  """mix [C, T] (T static) -> sources [C, N, T]: the spectral separator's one-pass estimate (no MAP iterations),
  the fit on the mid channel (C = 1 is its mono `separate`), its masks applied to every channel."""
  return dft_separate(separator, mix, lambda x: one_pass_models(separator, x), mid=True)


def _frozen_graph_module(graph, rows, chunk_length: int):
  """A tf.Module whose `separate_chunk` (mix [rows, chunk] -> sources [rows, N, chunk]; rows None: any) is
  graph(mix) with the networks' variables frozen to constants."""
  from tensorflow.python.framework import convert_to_constants  # pylint: disable=import-outside-toplevel
  spec = tf.TensorSpec([rows, chunk_length], tf.float32, name="mix")
  frozen = convert_to_constants.convert_variables_to_constants_v2(tf.function(graph).get_concrete_function(spec))

  class Frozen(tf.Module):

    @tf.function(input_signature=[spec])
    def separate_chunk(self, mix):
      return {"sources": frozen(mix)[0]}

  return Frozen()


# Measured on pretrained/toy (export/benchmark.py, 40 test items): float16 weights cost 14 dB SI-SDR (mean 9.9 dB
# against 23.3 for float32; dynamic-range int8 cost 0.9). Likely cause, not isolated: the pitch grid and the combs'
# constants in half precision (a 1e-3 relative pitch error puts high harmonics bins away).
HARMONIC_QUANTIZATIONS = ("none", "dynamic")
HARMONIC_FLOAT16 = ("a harmonic separator does not convert to TFLite float16: float16 weights cost 14 dB SI-SDR "
                    "on the toy (measured); use none or dynamic")


def model_dir_separator(model_dir: str, overrides=()):
  """The separator of a spectral or harmonic model directory in the form its TFLite graph holds: a spectral
  separator's one pass (--spectral_search.iterations=0; a spectral_encoder's at the 'fast' preset: no MISI
  rounds unless `overrides` set them), a harmonic separator whole."""
  from vsep_tf import model_dir as model_dir_lib  # pylint: disable=import-outside-toplevel
  kind = model_dir_lib.read_manifest(model_dir)["separator"]
  if kind in ("spectral", "spectral_encoder"):
    return model_dir_lib.load_separator(model_dir, list(overrides) + ["--spectral_search.iterations=0"],
                                        quality="fast")
  if kind == "harmonic":
    return model_dir_lib.load_separator(model_dir, list(overrides))
  raise ValueError(f"{model_dir}: a {kind!r} model; --model_dir conversion is for spectral separators "
                   "(--job=spectral or spectral_encoder) and harmonic ones (--job=harmonic_separator); convert "
                   "other models' SavedModel export (--saved_model_dir)")


def export_model_tflite(separator, output_dir: str, name: str, quantizations=("none", "dynamic"),
                        chunk_length: int = None, saved_model_dir: str = None, model_dir: str = None) -> dict:
  """Writes <output_dir>/<name>_<f32|dynamic|f16>.tflite (+ .json) of a spectral or harmonic separator over a
  real DFT; {quantize: path}.

  separator: a SpectralPriorSeparator -> its ONE-PASS graph (one_pass_separate: mix [channels, chunk] -> sources
  [channels, N, chunk]; its settings' iterations are ignored, the metadata says iterations=0 and
  graph='one_pass'); a HarmonicSeparator -> the whole separator (mix [1, chunk] -> sources [1, N, chunk], graph
  'chunk': a static batch of one, which XNNPack needs for this graph's reshapes). chunk_length: default the
  SavedModel's (saved_model_dir given), else the separator's. saved_model_dir / model_dir: recorded in the
  metadata."""
  harmonic = separator.method == "harmonic"
  if not harmonic and separator.method != "spectral":
    raise ValueError(f"a {separator.method!r} separator has no graph here; convert its SavedModel export")
  if harmonic and not set(quantizations) <= set(HARMONIC_QUANTIZATIONS):
    raise ValueError(HARMONIC_FLOAT16)
  meta = (saved_model_lib.read_metadata(saved_model_dir) if saved_model_dir
          else saved_model_lib.metadata_of(separator, chunk_length or separator.chunk_length))
  chunk = int(chunk_length or meta["chunk_length"])
  describe = json.loads(json.dumps(separator.describe(), default=str))
  meta = dict(meta, chunk_length=chunk, chunk_overlap=int(min(separator.chunk_overlap, chunk // 2)),
              describe=describe)
  if harmonic:
    meta.update(graph="chunk", inputs={"mix": "float32 [1, chunk_length] at sample_rate (one channel)"},
                outputs={"sources": "float32 [1, num_sources, chunk_length]"},
                note="TFLite form of a harmonic separator: the whole separator (pitch encoder, refinement, combs, "
                     "masks) over a real DFT; channels are separated one by one.")
    module = _frozen_graph_module(lambda mix: dft_separate(separator, mix, separator.frame_models, mid=False),
                                  1, chunk)
  else:
    describe["iterations"] = 0
    meta.update(graph=ONE_PASS, stereo=describe.get("stereo", "mid"),
                inputs={"mix": "float32 [channels, chunk_length] at sample_rate (one track's channels)"},
                outputs={"sources": "float32 [channels, num_sources, chunk_length]"},
                note="TFLite form of a spectral separator: the amortised encoder's one forward pass, no MAP "
                     "iterations (--spectral_search.iterations=0); the masks of the channels' mean applied to "
                     "every channel. The SavedModel export keeps the full separator.")
    module = _frozen_graph_module(lambda mix: one_pass_separate(separator, mix), None, chunk)
  if saved_model_dir:
    meta["source_saved_model"] = os.path.abspath(saved_model_lib.version_dir(saved_model_dir))
  if model_dir:
    meta["source_model_dir"] = os.path.abspath(model_dir)
  paths = {}
  for q in quantizations:
    data = _convert_module(module, q)
    path = os.path.join(output_dir, f"{name}_{QUANTIZATIONS[q]}.tflite")
    info = dict(meta, quantization=q, signature=SIGNATURE, size_bytes=len(data))
    _atomic_write(metadata_path(path), json.dumps(info, indent=2, sort_keys=True).encode("utf-8"))
    _atomic_write(path, data)
    paths[q] = path
  return paths


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
  """A .tflite export as a Separator. Signature separate_chunk: mix [1, chunk] -> sources [1, N, chunk] (a
  waveform encoder or a harmonic separator), or, for a spectral separator's one-pass graph (metadata
  graph='one_pass'), mix [channels, chunk] -> sources [channels, N, chunk] (one track's channels: masks from their
  mean).

  separate(mix [batch, time <= chunk]) runs the rows one by one, zero-padded to the chunk length (the model is
  fixed-length); separate_channels(mix [batch, channels, time]) passes a one-pass graph each item's channels
  together (stereo='mid'), otherwise every channel on its own. Longer signals go through separate_long /
  separate_stream (vsep_tf.inference) with chunk_length <= the chunk.
  """

  def __init__(self, path: str, num_threads: int = None):
    self.path = path
    with open(metadata_path(path), encoding="utf-8") as f:
      self.meta = json.load(f)
    self.graph = self.meta.get("graph", "chunk")
    suffix = f" {self.graph}" if self.graph == ONE_PASS else ""
    self.method = f"tflite-{self.meta['quantization']}/{self.meta['method']}{suffix}"
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

  def separate_channels(self, mix) -> np.ndarray:
    mix = channels_batch(mix)
    if self.graph != ONE_PASS or self.meta.get("stereo", "mid") != "mid" or mix.shape[1] == 1:
      return super().separate_channels(mix)
    b, c, t = mix.shape
    if t > self.chunk_length:
      raise ValueError(f"this model takes at most {self.chunk_length} samples per channel, got {t}; use "
                       "separate_stream")
    out = np.zeros([b, c, self.num_sources, t], np.float32)
    chunk = np.zeros([c, self.chunk_length], np.float32)
    for i in range(b):
      chunk[:] = 0.0
      chunk[:, :t] = mix[i]
      out[i] = np.asarray(self._runner(mix=chunk)["sources"])[:, :, :t]
    return out


def main(argv):
  from absl import flags  # pylint: disable=import-outside-toplevel
  fv = flags.FLAGS
  if len(argv) > 1:
    print(f"error: unexpected arguments {argv[1:]}", file=sys.stderr)
    return 2
  if not (fv.saved_model_dir or fv.model_dir) or not fv.output_dir:
    print("error: --output_dir and --saved_model_dir or (a spectral or harmonic separator) --model_dir are "
          "required", file=sys.stderr)
    return 2
  bad = [q for q in fv.quantize if q not in QUANTIZATIONS]
  if bad:
    print(f"error: --quantize: unknown {bad}; choose from {sorted(QUANTIZATIONS)}", file=sys.stderr)
    return 2
  try:
    if fv.model_dir:
      separator = model_dir_separator(fv.model_dir, fv.model_override)
      name = fv.name or (os.path.basename(os.path.normpath(fv.saved_model_dir)) if fv.saved_model_dir
                         else os.path.basename(os.path.normpath(fv.model_dir)))
      paths = export_model_tflite(separator, fv.output_dir, name, fv.quantize, fv.chunk_length or None,
                                     saved_model_dir=fv.saved_model_dir or None, model_dir=fv.model_dir)
    else:
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
  flags.DEFINE_string("model_dir", None, "A spectral separator's model directory (--job=spectral or "
                      "spectral_encoder, e.g. pretrained/band): converts its one-pass graph (no MAP iterations); "
                      "a harmonic separator's (e.g. pretrained/toy): the whole separator over a real DFT.")
  flags.DEFINE_multi_string("model_override", [], "'--name=value' replacing a flag saved in --model_dir.")
  flags.DEFINE_integer("chunk_length", 0, "Fixed chunk of the --model_dir graph (0: the SavedModel's if "
                       "--saved_model_dir is given, else the separator's).")
  flags.DEFINE_string("output_dir", None, "Where the .tflite files go.")
  flags.DEFINE_string("name", None, "File name prefix (default: the export's model name).")
  flags.DEFINE_list("quantize", ["none", "dynamic"], f"Variants: {', '.join(QUANTIZATIONS)}.")


def run():
  from absl import app  # pylint: disable=import-outside-toplevel
  _define_flags()
  app.run(main)


if __name__ == "__main__":
  run()
