"""Keras 3 layers: WaveNet blocks and stack, noise-level embedding, logistic-mixture output distribution."""
from vsep_tf.layers.mixture import (BIN_WIDTH_16BIT, LOG_SCALE_MIN, LogisticMixture, discretized_logistic_log_density,
                                    logistic_log_pdf, mixture_log_prob, mixture_sample, split_params)
from vsep_tf.layers.wavenet import DilatedConv1D, NoiseLevelEmbedding, ResidualBlock, WaveNet

__all__ = [
    "BIN_WIDTH_16BIT", "LOG_SCALE_MIN", "LogisticMixture", "discretized_logistic_log_density", "logistic_log_pdf",
    "mixture_log_prob", "mixture_sample", "split_params",
    "DilatedConv1D", "NoiseLevelEmbedding", "ResidualBlock", "WaveNet",
]
