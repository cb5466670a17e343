"""The feature cache: per split, per example and per exit, pooled hidden states and exit logits.

See docs/cache-format.md for the on-disk layout.
"""

from .store import FeatureCache, infer_format, shard_chunks
from .schema import SCHEMA_VERSION, CacheMeta, SplitFeatures

__all__ = ["SCHEMA_VERSION", "CacheMeta", "FeatureCache", "SplitFeatures", "infer_format", "shard_chunks"]
