"""Which checkpoints the user trusts with full (code-executing) unpickling.

Nothing is trusted by default. :func:`trust_checkpoint` (in Python) and the environment variable
:data:`TRUSTED_CHECKPOINTS_ENV` name files, directories, exact URLs or ``sha256:<hex>`` content
hashes; :mod:`ctvis.utils.checkpoint` asks :func:`is_trusted` before loading a file.
"""
import hashlib
import os
import os.path as osp
import warnings
from typing import FrozenSet, Optional

__all__ = ['TRUSTED_CHECKPOINTS_ENV', 'SHA256_PREFIX', 'trust_checkpoint', 'file_sha256',
           'is_trusted']

TRUSTED_CHECKPOINTS_ENV = 'CTVIS_TRUSTED_CHECKPOINTS'
"""Environment variable: whitespace-separated (spaces, tabs or newlines) entries whose checkpoints
may be fully unpickled (they can run code: list only what you trust). An entry is a file, a
directory (every file under it), a full URL (``https://...``; only that exact URL) or
``sha256:<64 hex digits>`` (any file with that content). Whitespace separates because it cannot
occur in a URL (``:`` and ``;`` can); a path containing whitespace is trusted by its hash or with
:func:`trust_checkpoint`."""

SHA256_PREFIX = 'sha256:'

_trusted_sources: set = set()


def trust_checkpoint(entry: str) -> None:
    """Allow full (code-executing) unpickling for one file, every file under a directory, one
    exact URL, or any file whose content has the hash ``sha256:<64 hex digits>``.

    Use only for files you trust, e.g. your own checkpoints that hold custom Python objects.
    """
    _trusted_sources.add(os.fspath(entry))


def _trusted_entries() -> FrozenSet[str]:
    """What :func:`trust_checkpoint` and :data:`TRUSTED_CHECKPOINTS_ENV` trust."""
    listed = os.environ.get(TRUSTED_CHECKPOINTS_ENV, '').split()
    for entry in listed:
        if ':' in entry and '://' not in entry and not entry.startswith(SHA256_PREFIX):
            warnings.warn(
                f'{TRUSTED_CHECKPOINTS_ENV} entry {entry!r} contains ":" but is neither a URL nor '
                'a sha256: hash; entries are separated by whitespace (not ":"), so it trusts '
                'only a path of exactly that name', stacklevel=4)
    return frozenset(_trusted_sources.union(listed))


def file_sha256(path: str) -> str:
    """Hex sha256 of a file's content (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, 'rb') as stream:
        for block in iter(lambda: stream.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def _trusted_by_hash(entries: FrozenSet[str], path: Optional[str]) -> bool:
    hashes = {e[len(SHA256_PREFIX):].lower() for e in entries if e.startswith(SHA256_PREFIX)}
    return bool(hashes) and path is not None and osp.isfile(path) and file_sha256(path) in hashes


def is_trusted(source: str, path: Optional[str] = None) -> bool:
    """Whether ``source`` (a path or URL) may be fully unpickled; ``path`` is the file read.

    A URL is trusted by exactly that URL (never by the name or folder of its cached copy); a file
    by its path or a directory above it; either by the sha256 of ``path``'s content.
    """
    entries = _trusted_entries()
    if source in entries:
        return True
    if '://' not in source:
        real_source = osp.realpath(osp.expanduser(source))
        for entry in entries:
            if '://' in entry or entry.startswith(SHA256_PREFIX):
                continue
            real_entry = osp.realpath(osp.expanduser(entry))
            if real_source == real_entry or real_source.startswith(
                    real_entry.rstrip(os.sep) + os.sep):
                return True
        path = source if path is None else path
    return _trusted_by_hash(entries, path)
