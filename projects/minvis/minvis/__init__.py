"""MinVIS (Huang et al., NeurIPS 2022) on the ctvis stack.

Importing this package registers :class:`MinVISTracker` into mmdet's ``MODELS`` registry; configs
bring it in with ``custom_imports=dict(imports=['ctvis', 'projects.minvis.minvis'])``.
"""
from .tracker import MinVISTracker, MinVISVideoTracks, match_embeddings

__all__ = ['MinVISTracker', 'MinVISVideoTracks', 'match_embeddings']
