"""vsep-tf: unsupervised audio source separation with deep priors (TensorFlow / Keras / TFP)."""
from setuptools import find_packages, setup

# Ranges, not pins: lower bounds are the oldest stack we test (the tensorflow-io lane: TF 2.17),
# no upper bounds tighter than what CI runs (TF 2.21).
CORE = [
    "tensorflow>=2.17",
    "tf-keras>=2.17",            # tensorflow-probability will not import without it
    "tensorflow-probability>=0.24",
    "tensorboard>=2.17",
    "absl-py>=2.0",
    "numpy>=1.26",
    "scipy>=1.10",
    "soundfile>=0.12",
]
EXTRAS = {
    # MUSDB18 loading and BSSEval v4 scoring (need ffmpeg/ffprobe on PATH, see README).
    "musdb": ["musdb>=0.4.3", "museval>=0.4.1"],
    # --tuner=bayesian needs scikit-learn (keras-tuner[bayesian]); trials.png needs matplotlib.
    "tune": ["keras-tuner>=1.4.7", "scikit-learn>=1.3", "matplotlib>=3.7"],
    "serving": ["tensorflow-serving-api>=2.17", "grpcio>=1.60"],
    "tflite": ["ai-edge-litert>=1.0"],
    # In-graph decoding/resampling for tf.data. Its last release (0.37.1) only loads with TF 2.16/2.17;
    # vsep_tf probes for it at run time and falls back to soundfile/scipy.
    "io": ["tensorflow-io>=0.37"],
    # Heatmaps and charts of the diagnostic tools.
    "plots": ["matplotlib>=3.7"],
    "test": ["pytest>=7", "pytest-xdist>=3"],
}
EXTRAS["all"] = sorted({p for k, v in EXTRAS.items() if k not in ("io", "test") for p in v})

setup(
    name="vsep-tf",
    version="0.1.0",
    description="Unsupervised audio source separation with deep priors (WaveNet, Glow) in TensorFlow",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["vsep_tf", "vsep_tf.*"]),
    python_requires=">=3.10",
    install_requires=CORE,
    extras_require=EXTRAS,
    entry_points={
        "console_scripts": [
            "vsep-train=vsep_tf.train:run",
            "vsep-tune=vsep_tf.tune:run",
            "vsep-evaluate=vsep_tf.evaluate:run",
            "vsep-separate=vsep_tf.separate:run",
            "vsep-export-savedmodel=vsep_tf.export.saved_model:run",
            "vsep-export-tflite=vsep_tf.export.tflite:run",
            "vsep-serving-client=vsep_tf.export.client:run",
            "vsep-dev-server=vsep_tf.export.dev_server:run",
        ]
    },
)
