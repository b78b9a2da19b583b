"""ctvis.datasets."""
