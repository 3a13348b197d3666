"""Where words come from (calibration and evaluation windows) and how a model is scored on them."""
