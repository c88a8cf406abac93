"""Images: a content-addressed store (an OCI image layout on disk), import
of ``docker save`` archives, OCI layouts and root file system tarballs, and
the unpacked layers container roots are made of."""

from .image_store import ImageStore
from .layercheck import LayerLimits
from .model import Image, Layer
from .store import PruneReport, Store, default_home

__all__ = ["ImageStore", "Store", "Image", "Layer", "LayerLimits", "PruneReport", "default_home"]
