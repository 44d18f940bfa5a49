"""Source priors p_sigma(s), one per source class; chosen by name from an explicit registry.

wavenet: autoregressive likelihood; flow: Glow/FloWaveNet likelihood; score: denoiser (score by Tweedie)."""
from vsep_tf.priors.base import Prior, geometric_sigmas, sample_sigma
from vsep_tf.priors.flow import FlowPrior, build_flow_prior
from vsep_tf.priors.score import ScorePrior, build_score_prior
from vsep_tf.priors.wavenet import WaveNetPrior, build_wavenet_prior

PRIORS = {
    "wavenet": build_wavenet_prior,
    "flow": build_flow_prior,
    "score": build_score_prior,
}
