"""ctvis.utils."""
