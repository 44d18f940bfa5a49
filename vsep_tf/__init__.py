"""vsep-tf: unsupervised audio source separation with deep priors.

Layout (one part per piece of the method; each imports only the parts listed above it, no cycles):
  config       Config: the resolved settings of a run or model (a read-only mapping; no absl below the CLIs)
  signal       pure TF signal functions (mu-law, STFT/ISTFT, framing/overlap-add, SI-SDR)
  audio        audio file I/O (WAV/FLAC), resampling, channel policy, input validation
  data         toy data, stem folders, MUSDB18 as tf.data pipelines; solo audio and frames of each class
  layers       Keras 3 layers (WaveNet blocks)
  bijectors    TFP bijectors for the Glow / FloWaveNet flow
  priors       per-class priors: spectral VAE (the product), WaveNet / flow / score waveform priors
  separators   spectral MAP + amortised encoder, masks, NMF, oracles; Langevin, waveform encoder, periodic
  registry     hyperparameter families (--<family>.<arg>), building priors and data sets from a Config
  model_dir    model directories: manifest.json, restore, load_separator
  training     tf.distribute custom training loop, the trainers, the one-command spectral pipeline
  research     measured options off the product path (docs/research.md)
  evaluation   BSSEval v4 + SI-SDR scoring, prior confusion
  inference    separation of waveforms / files at any rate and channel count, streamed
  export       SavedModel / TFLite / TF-Serving client and development stand-in server
  run_flags, cli   the absl flags of the commands (train, tune, evaluate; separate and the serving client)
"""
__version__ = "0.1.0"
