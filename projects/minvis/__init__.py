"""MinVIS baseline project: see projects/minvis/README.md."""
