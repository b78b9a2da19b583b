"""ctvis.models."""
