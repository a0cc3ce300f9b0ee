"""Training: the paper's two-phase recipe (autoencoder, then NCA with a pool), the baselines'
training, the official bugs fixed behind ``faithful_*`` switches, checkpoints, resume and DDP."""

from .recipe import RECIPES, Recipe, get_recipe
from .trainer import Trainer, train

__all__ = ["RECIPES", "Recipe", "Trainer", "get_recipe", "train"]
