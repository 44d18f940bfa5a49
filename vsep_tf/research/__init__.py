"""Research code: methods and options that were measured and are not on the product path.

Each has one line with its measured status in docs/research.md; configs that use them are in configs/research/.
  sleep_trainer   the sleep phase of wake-sleep and teacher distillation for the waveform encoder
Other measured options stay as settings of the module they modify and are off by default (docs/research.md):
--elbo_prior_noise (score distillation), --score.sample_churn (ancestral prior samples), --spectral.eq_db /
--spectral.pitch_semitones (augmentation), --priors_search=periodic (the toy's steady-tone search).
"""
