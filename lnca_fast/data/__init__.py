"""Data: the paper's corruptions and curriculum, the embedded scikit-image dataset, loaders for
the paper's datasets, splits by source, training batches and fixed evaluation sets."""

from .batches import EvalSet, eval_set, train_batches
from .corruptions import corrupt, corruption_mask, motion_blur, sparse_noise
from .curriculum import EVAL_LEVEL, Curriculum
from .dataset import ImageSplits
from .load import DATASETS, load_splits

__all__ = [
    "DATASETS",
    "EVAL_LEVEL",
    "Curriculum",
    "EvalSet",
    "ImageSplits",
    "corrupt",
    "corruption_mask",
    "eval_set",
    "load_splits",
    "motion_blur",
    "sparse_noise",
    "train_batches",
]
