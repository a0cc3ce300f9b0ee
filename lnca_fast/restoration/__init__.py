"""Restoring images with a trained model (``lnca restore`` for files, ``lnca_fast.restore`` in memory):

- ``engine``: one model on whole images (steps, update rate, self-ensemble, tiny-image padding);
- ``tiling``: large images in aligned, overlapping tiles blended without seams (and the default tile size);
- ``loading``: which weights (shipped name, task default or file), on which device, with how many steps;
- ``api``: ``lnca_fast.restore`` for numpy arrays, PIL images and torch tensors;
- ``inputs``: command-line paths to (input, output) pairs, checked before anything is written;
- ``palette``, ``png16``, ``tiff``: file modes Pillow alone would not keep (palette with per-entry
  alpha, 16-bit colour PNG, 16-bit TIFF), which ``stored`` uses;
- ``stored``: the stored-image round trip (a file's mode, bit depth, alpha, palette and metadata kept)."""
