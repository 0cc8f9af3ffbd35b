"""artifacts_tasks: keep a tree of verification artifacts small, losing nothing that matters."""

from .config import Config, Family, Retention, default_config, load_config
from .errors import ArtifactsError
from .manifest import Entry, FileRecord, Manifest, load_manifest
from .scan import Refreshed, ScanResult, refresh

__all__ = [
    "ArtifactsError",
    "Config",
    "Entry",
    "Family",
    "FileRecord",
    "Manifest",
    "Refreshed",
    "Retention",
    "ScanResult",
    "default_config",
    "load_config",
    "load_manifest",
    "refresh",
]
__version__ = "0.1.0"
