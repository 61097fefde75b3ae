"""Small helpers shared across wsigraph: atomic file writes, seeding, logging."""
from wsigraph.utils.atomic import atomic_path, atomic_write_text, atomic_write_json

__all__ = ["atomic_path", "atomic_write_text", "atomic_write_json"]
