"""Training-loop additions that plug into mesh-tf's `utils.run` through Gin."""
