"""TFLite form of the spectral separators: the real-DFT STFT / ISTFT (signal_dft) against signal.stft / istft, the
one-pass graph (no MAP iterations) converted to TFLite against the eager one-pass separator (mono rows, stereo
chunks with masks from the mid channel, a long stereo file through the separate CLI), the quantised variants, and
export/export_model.sh on a shipped spectral model (slow)."""
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

from vsep_tf import audio
from vsep_tf import inference
from vsep_tf import signal as signal_lib
from vsep_tf import signal_dft
from vsep_tf.export import tflite as tflite_lib
from vsep_tf.priors.spectral import SpectralPrior
from vsep_tf.separators import spectral

REPO = Path(__file__).resolve().parents[1]
CHUNK = 4096
NAMES = ("a", "b", "c")


def _noise(shape, seed=0, scale=0.3):
  return (scale * np.random.RandomState(seed).randn(*shape)).astype(np.float32)


def _sdr(ref, est):
  return 10 * np.log10(np.sum(np.square(ref, dtype=np.float64)) / np.sum(np.square(ref - est, dtype=np.float64)))


# ---------------------------------------------------------------------------------------------- signal_dft
@pytest.mark.parametrize("n_fft,hop,length", [(1024, 256, 5000), (4096, 1024, 12345), (512, 128, 777),
                                              (400, 160, 3000)])  # the last: hop does not divide the frame
def test_real_dft_stft_istft_equal_signal_stft_istft(n_fft, hop, length):
  x = _noise([2, length], seed=n_fft)
  ref = signal_lib.stft(x, n_fft, hop).numpy()
  re, im = signal_dft.stft(x, n_fft, hop)
  scale = np.abs(ref).max()
  np.testing.assert_allclose(re.numpy(), ref.real, atol=2e-6 * scale)
  np.testing.assert_allclose(im.numpy(), ref.imag, atol=2e-6 * scale)
  # The inverse of the same (complex) spectrum, as signal.istft computes it, and the round trip.
  masked = ref * np.random.RandomState(1).rand(*ref.shape).astype(np.float32)
  want = signal_lib.istft(masked, n_fft, hop, length=length).numpy()
  got = signal_dft.istft(tf.constant(masked.real), tf.constant(masked.imag), n_fft, hop, length=length).numpy()
  np.testing.assert_allclose(got, want, atol=2e-6)
  np.testing.assert_allclose(signal_dft.istft(re, im, n_fft, hop, length=length).numpy(), x, atol=2e-6)
  assert got.shape == (2, length)


# ------------------------------------------------------------------------------ one-pass graph in TFLite
def _tiny_separator(rate=44100, mix="sum", encoder=True, arch=None, stereo="mid", phase_iterations=0):
  tf.keras.utils.set_random_seed(0)
  priors = {n: SpectralPrior(n_fft=256, hop=64, latent_dim=4, hidden_units=48) for n in NAMES}
  enc = None
  if encoder:
    kwargs = dict(hidden_units=64)
    if arch is not None:
      kwargs.update(arch=arch, wavenet_blocks=1, wavenet_layers=2)
    enc = spectral.SpectralEncoder(len(NAMES), 129, 4, **kwargs)
  return spectral.SpectralPriorSeparator(priors, rate, mix, iterations=0, encoder=enc, chunk_length=CHUNK,
                                         stereo=stereo, phase_iterations=phase_iterations)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  """A tiny untrained spectral separator (44.1 kHz) with an amortised encoder and its three TFLite variants."""
  sep = _tiny_separator()
  out = tmp_path_factory.mktemp("tflite_spectral")
  paths = tflite_lib.export_model_tflite(sep, str(out), "tiny", ("none", "dynamic", "float16"))
  return sep, paths


def test_one_pass_tflite_float32_parity_mono_and_stereo(tiny):
  sep, paths = tiny
  lite = tflite_lib.TFLiteSeparator(paths["none"])
  assert lite.source_names == NAMES and lite.chunk_length == CHUNK and lite.graph == "one_pass"
  with open(tflite_lib.metadata_path(paths["none"]), encoding="utf-8") as f:
    meta = json.load(f)
  assert meta["graph"] == "one_pass" and meta["describe"]["iterations"] == 0 and meta["quantization"] == "none"
  ops = {d["op_name"] for d in lite.interpreter._get_ops_details()}  # pylint: disable=protected-access
  assert "GELU" in ops and not ops & {"RFFT2D", "FLEX_DELEGATE", "CUSTOM", "COMPLEX_ABS", "REAL", "IMAG"}, ops
  assert {"COS", "SIN"} <= ops  # the DFT bases are computed in the graph, not stored (nor quantised)
  x = _noise([2, CHUNK], seed=3)
  eager = sep.separate(x).numpy()
  scale = np.abs(eager).max()
  np.testing.assert_allclose(lite.separate(x), eager, atol=1e-5 * scale)       # mono rows: [1, chunk] each
  stereo = _noise([1, 2, CHUNK], seed=4)
  eager2 = sep.separate_channels(stereo)
  np.testing.assert_allclose(lite.separate_channels(stereo), eager2, atol=1e-5 * np.abs(eager2).max())
  # Masks from the mid channel: every channel's estimates add up to that channel.
  np.testing.assert_allclose(lite.separate_channels(stereo)[0].sum(axis=1), stereo[0], atol=1e-4)


@pytest.mark.parametrize("stereo", ["mid", "independent"])
def test_saved_model_separates_a_tracks_channels_like_the_separator(stereo, tmp_path):
  """The SavedModel of a spectral separator has a separate_channels signature ([B, C, T] -> [B, C, N, T]): a
  stereo file through the export (loaded, or served over gRPC) gets the separator's own stereo handling (one fit
  on the mid channel, or every channel on its own), not every channel as a separate mono mix."""
  from vsep_tf.export import saved_model as saved_model_lib  # pylint: disable=import-outside-toplevel
  sep = _tiny_separator(stereo=stereo)
  path = saved_model_lib.export_saved_model(sep, str(tmp_path), "tiny", version=1)
  loaded = saved_model_lib.SavedModelSeparator(path)
  assert "separate_channels" in loaded.model.signatures
  x = _noise([2, 2, CHUNK + 321], seed=8)
  want = sep.separate_channels(x)
  np.testing.assert_allclose(loaded.separate_channels(x), want, atol=1e-5 * np.abs(want).max())
  per_channel = np.asarray(sep.separate(x.reshape(4, -1))).reshape(want.shape)
  assert (np.abs(want - per_channel).max() > 1e-3) == (stereo == "mid")
  if stereo == "mid":  # served (TF-Serving's API, the stand-in server): the client finds and uses the signature
    from vsep_tf.export import client as client_lib  # pylint: disable=import-outside-toplevel
    from vsep_tf.export import dev_server  # pylint: disable=import-outside-toplevel
    server, port = dev_server.serve(os.path.join(str(tmp_path), "tiny"), "tiny", port=0, host="127.0.0.1")
    try:
      remote = client_lib.ServingSeparator(f"127.0.0.1:{port}", "tiny")
      assert "separate_channels" in remote.signatures
      np.testing.assert_allclose(remote.separate_channels(x), want, atol=1e-5 * np.abs(want).max())
    finally:
      server.stop(grace=None)


@pytest.mark.slow
def test_one_pass_tflite_long_stereo_stream_matches_eager(tiny):
  sep, paths = tiny
  lite = tflite_lib.TFLiteSeparator(paths["none"])
  x = _noise([3 * CHUNK + 1234, 2], seed=5)
  want = inference.AudioSeparator(sep).separate(x, sep.sample_rate)
  got = inference.AudioSeparator(lite).separate(x, sep.sample_rate)
  for n in NAMES:
    assert got[n].shape == x.shape
    np.testing.assert_allclose(got[n], want[n], atol=1e-5 * np.abs(want[n]).max())


@pytest.mark.slow
def test_one_pass_tflite_quantised_variants(tiny):
  """Dynamic-range int8 and float16: smaller files, estimates close to float32 (the DFT stays float32: its bases
  are computed, not weights)."""
  sep, paths = tiny
  x = _noise([1, 2, CHUNK], seed=6)
  f32 = tflite_lib.TFLiteSeparator(paths["none"]).separate_channels(x)
  for q, min_sdr in (("dynamic", 15.0), ("float16", 40.0)):
    est = tflite_lib.TFLiteSeparator(paths[q]).separate_channels(x)
    assert _sdr(f32, est) > min_sdr, (q, _sdr(f32, est))
  sizes = {q: os.path.getsize(p) for q, p in paths.items()}
  assert sizes["dynamic"] < 0.5 * sizes["none"] and sizes["float16"] < 0.75 * sizes["none"], sizes


def test_misi_rounds_in_tflite_and_saved_model_match_eager(tmp_path):
  """phase_iterations > 0: the MISI rounds in real arithmetic (unrolled) give the eager separator's estimates, and
  every channel's still add up to it ('mean' mix: to N times it); the SavedModel (a while loop over a static
  chunk) gives them too."""
  from vsep_tf.export import saved_model as saved_model_lib  # pylint: disable=import-outside-toplevel
  sep = _tiny_separator(mix="mean", phase_iterations=2)
  paths = tflite_lib.export_model_tflite(sep, str(tmp_path), "m", ("none", "float16"))
  lite = tflite_lib.TFLiteSeparator(paths["none"])
  x = _noise([1, 2, CHUNK], seed=8)
  x[..., :1000] = 0.0  # silent bins: the float16 model's rounds once gave 0 / 0 there
  assert np.isfinite(tflite_lib.TFLiteSeparator(paths["float16"]).separate_channels(x)).all()
  eager = sep.separate_channels(x)
  plain = _tiny_separator(mix="mean").separate_channels(x)
  assert np.abs(eager - plain).max() > 1e-3 * np.abs(plain).max()  # the rounds change the estimates
  out = lite.separate_channels(x)
  np.testing.assert_allclose(out, eager, atol=1e-5 * np.abs(eager).max())
  np.testing.assert_allclose(out[0].sum(axis=1), len(NAMES) * x[0], atol=1e-4)
  loaded = saved_model_lib.SavedModelSeparator(saved_model_lib.export_saved_model(sep, str(tmp_path), "sm", version=1))
  np.testing.assert_allclose(loaded.separate_channels(x), eager, atol=1e-5 * np.abs(eager).max())
  mono = x[0]  # two rows, each its own mix
  want = np.asarray(sep.separate(mono))
  np.testing.assert_allclose(loaded.separate(mono), want, atol=1e-5 * np.abs(want).max())


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["priors_encoders_mean_mix", "wavenet_encoder"])
def test_one_pass_tflite_other_inits_and_encoders(variant, tmp_path):
  """The graph calls the separator's encoder / its priors generically: the priors' own encoders (no amortised
  one) with a 'mean' mix, and a WaveNet-style encoder where SpectralEncoder has one."""
  if variant == "wavenet_encoder":
    if "arch" not in inspect.signature(spectral.SpectralEncoder).parameters:
      pytest.skip("SpectralEncoder has no arch='wavenet' here")
    sep = _tiny_separator(arch="wavenet")
  else:
    sep = _tiny_separator(mix="mean", encoder=False)
  paths = tflite_lib.export_model_tflite(sep, str(tmp_path), "m", ("none",))
  lite = tflite_lib.TFLiteSeparator(paths["none"])
  x = _noise([1, 2, CHUNK], seed=7)
  eager = sep.separate_channels(x)
  np.testing.assert_allclose(lite.separate_channels(x), eager, atol=1e-5 * np.abs(eager).max())


def test_saved_model_conversion_still_refuses_and_points_at_model_dir(tmp_path):
  """A spectral SavedModel (its MAP fit) is refused before loading, with a pointer to --model_dir."""
  version = tmp_path / "spec" / "1"
  (version / "assets").mkdir(parents=True)
  (version / "saved_model.pb").write_bytes(b"")
  (version / "assets" / "metadata.json").write_text(json.dumps({"method": "spectral"}))
  with pytest.raises(ValueError, match="does not convert to TFLite.*--model_dir"):
    tflite_lib.convert(str(tmp_path / "spec"))


def _stereo_song(path):
  t = np.arange(3 * CHUNK + 500) / 44100
  song = np.stack([0.3 * np.sin(2 * np.pi * 220 * t), 0.2 * np.sin(2 * np.pi * 330 * t)], axis=1)
  audio.write_audio(path, (song + _noise(song.shape, seed=8, scale=0.02)).astype(np.float32), 44100,
                    subtype="FLOAT")
  return song.shape


def _check_outputs(sep, src, out_dir, shape, tmp_path):
  ref = inference.AudioSeparator(sep).separate_file(src, str(tmp_path / "eager"), subtype="FLOAT")
  for n in NAMES:
    got, rate = sf.read(os.path.join(out_dir, "song", f"{n}.wav"), dtype="float32")
    want, _ = sf.read(ref[n], dtype="float32")
    assert rate == 44100 and got.shape == want.shape == shape
    np.testing.assert_allclose(got, want, atol=1e-5 * max(np.abs(want).max(), 1e-3))


def test_separate_loads_a_one_pass_tflite_for_a_stereo_44k_file(tiny, tmp_path):
  """What `python -m vsep_tf.separate --model_dir=<file.tflite>` runs (export.load_exported, separate_files) on a
  44.1 kHz stereo file equals the eager one-pass separator through the same file path. (The CLI module itself
  defines absl flags at import: the slow test runs it as a subprocess.)"""
  from vsep_tf import export  # pylint: disable=import-outside-toplevel
  sep, paths = tiny
  src = str(tmp_path / "song.wav")
  shape = _stereo_song(src)
  lite = export.load_exported(paths["none"])
  assert isinstance(lite, tflite_lib.TFLiteSeparator) and lite.method == "tflite-none/spectral one_pass"
  [result] = inference.separate_files(lite, inputs=src, output_dir=str(tmp_path / "out"), subtype="FLOAT")
  assert result.ok, result.error
  _check_outputs(sep, src, str(tmp_path / "out"), shape, tmp_path)


@pytest.mark.slow
def test_separate_cli_runs_a_one_pass_tflite_on_a_stereo_44k_file(tiny, tmp_path):
  """The same through the command line (a second TensorFlow start-up: slow lane)."""
  sep, paths = tiny
  src = str(tmp_path / "song.wav")
  shape = _stereo_song(src)
  r = subprocess.run([sys.executable, "-m", "vsep_tf.separate", f"--model_dir={paths['none']}", f"--input={src}",
                      f"--output_dir={tmp_path / 'out'}", "--subtype=FLOAT", "--noprogress"], capture_output=True,
                     text=True, timeout=600, cwd=str(REPO),
                     env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="-1"))
  assert r.returncode == 0, r.stderr[-3000:]
  _check_outputs(sep, src, str(tmp_path / "out"), shape, tmp_path)


# ------------------------------------------------------------------------------------------ export script
@pytest.mark.slow
def test_export_script_writes_saved_model_and_one_pass_tflite(tmp_path):
  """bash export/export_model.sh pretrained/chorales: the SavedModel (full MAP fit) and the three one-pass
  .tflite files, exit 0 (about a minute: slow)."""
  base = tmp_path / "exports"
  r = subprocess.run(["bash", "export/export_model.sh", "pretrained/chorales", str(base), "chorales"],
                     capture_output=True, text=True, timeout=900, cwd=str(REPO),
                     env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="-1"))
  assert r.returncode == 0, r.stderr[-3000:]
  assert "skipped TFLite" not in r.stdout
  assert (base / "chorales" / "1" / "saved_model.pb").is_file()
  with open(base / "chorales" / "1" / "assets" / "metadata.json", encoding="utf-8") as f:
    assert json.load(f)["describe"]["iterations"] == 0  # the SavedModel holds the default (fast) preset
  lite_dir = base / "chorales_tflite"
  for q in ("f32", "dynamic", "f16"):
    meta = json.loads((lite_dir / f"chorales_{q}.json").read_text())
    assert (lite_dir / f"chorales_{q}.tflite").stat().st_size == meta["size_bytes"] > 0
    assert meta["graph"] == "one_pass" and meta["describe"]["iterations"] == 0
    assert meta["source_saved_model"] == str((base / "chorales" / "1").resolve())
  lite = tflite_lib.TFLiteSeparator(str(lite_dir / "chorales_f32.tflite"))
  eager = tflite_lib.model_dir_separator(str(REPO / "pretrained" / "chorales"))
  x = _noise([1, lite.chunk_length], seed=9, scale=0.1)
  want = eager.separate(x).numpy()
  np.testing.assert_allclose(lite.separate(x), want, atol=1e-5 * np.abs(want).max())
