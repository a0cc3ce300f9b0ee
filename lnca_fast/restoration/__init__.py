"""Restoring image files with a trained model (``lnca restore``):

- ``engine``: one model on whole images (steps, update rate, self-ensemble, tiny-image padding);
- ``tiling``: large images in aligned, overlapping tiles blended without seams;
- ``inputs``: command-line paths to (input, output) pairs, checked before anything is written;
- ``palette``, ``png16``, ``tiff``: file modes Pillow alone would not keep (palette with per-entry
  alpha, 16-bit colour PNG, 16-bit TIFF); ``lnca_fast.images.read_stored`` / ``write_stored`` use them."""
