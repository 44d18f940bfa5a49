"""vsep-tf: unsupervised audio source separation with deep priors.

Layout (one sub-package per part of the method):
  signal       pure TF signal functions (mu-law, STFT/ISTFT, framing/overlap-add, SI-SDR)
  audio        audio file I/O (WAV/FLAC), resampling, channel policy, input validation
  data         toy data, stem folders, MUSDB18 as tf.data pipelines
  layers       Keras 3 layers (WaveNet blocks)
  bijectors    TFP bijectors for the Glow / FloWaveNet flow
  priors       one density p_sigma(s) per source class (WaveNet, flow), registry by name
  separators   Langevin, variational, supervised and NMF separators
  training     tf.distribute custom training loop, checkpoints, flags
  evaluation   BSSEval v4 + SI-SDR scoring
  inference    separation of waveforms / files at any rate and channel count, streamed (CLI: separate)
  export       SavedModel / TFLite / TF-Serving client and development stand-in server
"""
__version__ = "0.1.0"
