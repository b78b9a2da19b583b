"""ctvis.evaluation."""
