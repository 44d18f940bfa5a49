#!/usr/bin/env python3
r"""Speed of peer separators (Open-Unmix, HT-Demucs) on this CPU, for tools/bench.py. Needs only PyTorch and the
peers' pip packages (tools/install_peers.sh puts them in their own venv); prints one JSON object on stdout.

  .venv-peers/bin/python tools/bench_peers.py --input=mix.wav --threads=2

The weights are RANDOMLY INITIALISED (their pretrained weights cannot be downloaded here): the figures are speed
only, which does not depend on the weights. Each peer runs the way its own command-line tool does by default:
  * Open-Unmix: openunmix.umxhq(pretrained=False): 4 targets, 44.1 kHz stereo, STFT 4096/1024, 3-layer BLSTM of
    width 512 per target, 1 Wiener-EM iteration, the whole track in one pass;
  * HT-Demucs: demucs.htdemucs.HTDemucs with the constructor's defaults (4 sources, 44.1 kHz stereo), applied with
    demucs.apply.apply_model(split=True, overlap=0.25, shifts=1) as `demucs` separates.
The input (any rate, mono or stereo) is resampled to 44.1 kHz stereo, as a user would feed these models; the
real-time factor is compute seconds per second of audio. Peers that fail to import are reported with the reason.
"""
import argparse
import json
import sys
import time
import traceback


def _load_input(path, rate):
  import numpy as np  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  import wave  # pylint: disable=import-outside-toplevel
  with wave.open(path, "rb") as w:
    if w.getsampwidth() != 2:
      raise ValueError(f"{path}: expected a 16-bit WAV")
    src_rate, channels = w.getframerate(), w.getnchannels()
    x = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768.0
  x = torch.from_numpy(x.reshape(-1, channels).T.copy())
  if src_rate != rate:  # band-limited resampling, as torchaudio would (julius ships with demucs)
    import julius  # pylint: disable=import-outside-toplevel
    x = julius.resample_frac(x, src_rate, rate)
  if x.shape[0] == 1:
    x = x.repeat(2, 1)
  return x[None]  # [1, 2, time]


def _umx():
  import openunmix  # pylint: disable=import-outside-toplevel
  model = openunmix.umxhq(pretrained=False, device="cpu").eval()

  def run(x):
    return model(x)

  return model, run


def _htdemucs():
  from demucs.apply import apply_model  # pylint: disable=import-outside-toplevel
  from demucs.htdemucs import HTDemucs  # pylint: disable=import-outside-toplevel
  model = HTDemucs(sources=["drums", "bass", "other", "vocals"]).eval()

  def run(x):
    return apply_model(model, x, shifts=1, split=True, overlap=0.25, progress=False, device="cpu")

  return model, run


PEERS = {"Open-Unmix (umxhq)": _umx, "HT-Demucs": _htdemucs}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--input", required=True, help="16-bit WAV to separate")
  parser.add_argument("--threads", type=int, default=2)
  parser.add_argument("--rate", type=int, default=44100)
  args = parser.parse_args()
  out = {}
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    print(json.dumps({"error": f"PyTorch is not importable in {sys.executable}: {e}"}))
    return 0
  torch.set_num_threads(args.threads)
  x = _load_input(args.input, args.rate)
  seconds = x.shape[-1] / args.rate
  for name, build in PEERS.items():
    try:
      model, run = build()
      params = sum(p.numel() for p in model.parameters())
      with torch.inference_mode():
        run(x[..., :args.rate * 2])  # warm-up
        t0 = time.perf_counter()
        y = run(x)
        dt = time.perf_counter() - t0
      out[name] = {"rtf": dt / seconds, "seconds_of_audio": seconds, "parameters": int(params),
                   "output_shape": list(y.shape), "torch": torch.__version__, "threads": args.threads,
                   "weights": "random (speed only)"}
    except Exception as e:  # pylint: disable=broad-except
      out[name] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(limit=3)}
    print(f"{name}: {out[name].get('rtf', out[name].get('error'))}", file=sys.stderr, flush=True)
  print(json.dumps(out))
  return 0


if __name__ == "__main__":
  sys.exit(main())
