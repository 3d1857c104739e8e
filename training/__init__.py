"""Model training (TensorFlow in .venv-train); never imported by the daemon."""
