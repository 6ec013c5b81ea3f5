"""Training of learned gfvc models (the default landmark-driven model)."""
