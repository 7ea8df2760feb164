"""Images for ``procview run``: a content-addressed layer store, importers
for ``docker save`` archives, OCI image layouts and root file system tars,
safe layer extraction with overlayfs whiteouts, the built-in busybox, and
pulls from and pushes to registries.

Modules, in the order to read them: ``extract`` (one layer tar -> one
directory, safely), ``importers`` (which images an archive holds and where
their layer blobs are), ``store`` (layout on disk, verification, records,
removal), ``busybox`` (the built-in image's layer), ``reference`` (image
names by Docker's grammar), ``registry`` (the OCI distribution API),
``pull`` (a registry's image into the store), ``push`` (a stored image to
a registry), ``login`` (credentials in Docker's config.json),
``commands`` (the ``procview image``, ``pull``, ``push``, ``login`` and
``logout`` commands). See docs/images.md.
"""

from procview.runtime.images.store import (
    DEFAULT_ROOT as DEFAULT_ROOT,
    Image as Image,
    ImageError as ImageError,
    ImageNotFound as ImageNotFound,
    ImageStore as ImageStore,
    LayerHold as LayerHold,
    normalize_reference as normalize_reference,
)

__all__ = ["DEFAULT_ROOT", "Image", "ImageError", "ImageNotFound", "ImageStore", "LayerHold", "normalize_reference"]
