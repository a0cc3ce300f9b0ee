"""Worker for tests/test_ddp.py, launched by torchrun: train a tiny model, then write this rank's
final weights and what its pool saw."""

from __future__ import annotations

import json
import os
import sys

import torch

from lnca_fast.training.recipe import get_recipe
from lnca_fast.training.trainer import Trainer

if __name__ == "__main__":
    out = sys.argv[1]
    torch.set_num_threads(1)
    recipe = get_recipe(
        "smoke", model="tiny-latent-nafca", ae_epochs=1, epochs=2, train_limit=32, val_limit=8, eval_batch=8, fast_model=False
    )
    trainer = Trainer(recipe, os.path.join(out, "run"), progress=False, device="cpu")
    trainer.run()
    rank = trainer.dist.rank
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in trainer.model.state_dict().items()}, os.path.join(out, f"rank{rank}.safetensors"))
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump({"world": trainer.dist.world, "pool_sum": float(trainer.pool.clean.double().sum())}, f)
