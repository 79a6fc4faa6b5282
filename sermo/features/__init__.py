"""The feature store and extraction into it."""

from sermo.features.extraction import ExtractReport, extract, feature_keys
from sermo.features.store import DamagedEntry, FeatureStore, Features, default_store_root

__all__ = ["ExtractReport", "extract", "feature_keys", "DamagedEntry", "FeatureStore", "Features",
           "default_store_root"]
