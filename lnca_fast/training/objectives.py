"""The loss of each kind of optimizer step, as ``nn.Module`` objectives so ``DistributedDataParallel``
can wrap them (DDP synchronises the gradients of whatever its module's ``forward`` computes).

- ``AEObjective`` (phase 1, NCA bypassed: 0 steps reads the input channels), official §4:
  ``"main"``  = 100 rec([A;P;N]) + 10 triplet(x̂_A, x̂_P, x̂_N; margin 1) + 10 masked task(P);
  ``"equiv"`` = 100 [masked MSE(D(x̂_P, x̄_A), P) + masked MSE(D(x̂_A + eps, x̄_P), A)].
- ``NCAObjective`` (phase 2 latent, AE frozen in eval mode): 100 image MSE + 100 latent MSE
  (output channels vs E(clean)) + 1 output overflow [0, 1] + 1 hidden overflow [-1, 1].
  Pixel ViTCA: 100 L1 + 100 output overflow + 100 hidden overflow.
- ``SupervisedObjective`` (NAFNet: -PSNR; Restormer: L1).

Each ``forward`` returns ``(loss, parts)`` where ``parts`` are the detached weighted terms.
"""

from __future__ import annotations

import torch
from torch import nn

from ..reference.residual_fusion import sharp_inputs
from . import losses
from .recipe import Recipe


class AEObjective(nn.Module):
    def __init__(self, model: nn.Module, recipe: Recipe):
        super().__init__()
        self.model, self.recipe = model, recipe

    def _autoencode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model.rollout(x, 0)  # 0 steps: the decoder reads the input channels (switch S)
        return out.image, out.latent

    def _decode(self, latent: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.model.decode(self.model.seed(latent), skip, channels="input")

    def forward(self, kind: str, anchor, corrupted, negative=None, eps=None):
        r = self.recipe
        mask = (corrupted != anchor).to(anchor.dtype)  # m = 1[P - A != 0] per element
        if kind == "main":
            # Each of A, P, N in its own forward pass: BatchNorm statistics per sub-batch (official §4).
            with sharp_inputs(self.model):  # the blur hint is the corrupted batch's
                image_a, latent_a = self._autoencode(anchor)
            image_p, latent_p = self._autoencode(corrupted)
            with sharp_inputs(self.model):
                image_n, latent_n = self._autoencode(negative)
            rec = (losses.mse(image_a, anchor) + losses.mse(image_p, corrupted) + losses.mse(image_n, negative)) / 3
            triplet = losses.triplet_distance(latent_a.flatten(1), latent_p.flatten(1), latent_n.flatten(1), r.ae_margin)
            task = losses.masked_mse(image_p, corrupted, mask)
            parts = {"rec": r.ae_rec_weight * rec, "triplet": r.ae_triplet_weight * triplet, "task": r.ae_task_weight * task}
        elif kind == "equiv":
            with sharp_inputs(self.model):
                skip_a, latent_a = self.model.encode(anchor)
            skip_p, latent_p = self.model.encode(corrupted)
            swap_p = self._decode(latent_p, skip_a)  # corrupted latent, clean skip -> should give P
            swap_a = self._decode(latent_a + eps, skip_p)  # perturbed clean latent, corrupted skip -> A
            equiv = losses.masked_mse(swap_p, corrupted, mask) + losses.masked_mse(swap_a, anchor, mask)
            parts = {"equiv": r.ae_equiv_weight * equiv}
        else:
            raise ValueError(f"kind must be 'main' or 'equiv', got {kind!r}")
        return sum(parts.values()), {k: v.detach() for k, v in parts.items()}


class NCAObjective(nn.Module):
    def __init__(self, model: nn.Module, recipe: Recipe, update_rate: float, teacher=None):
        """``teacher``: an ``EnsembleTeacher`` whose target replaces clean in the image loss."""
        super().__init__()
        self.model, self.recipe, self.update_rate, self.teacher = model, recipe, update_rate, teacher

    def forward(self, clean, corrupted, steps: int, state=None, generator=None):
        r, layout = self.recipe, self.model.layout
        out = self.model.rollout(corrupted, steps, state=state, update_rate=self.update_rate, generator=generator)
        s_out, s_hid = out.state[..., layout.output], out.state[..., layout.hidden_slice]
        if r.latent:
            with torch.no_grad(), sharp_inputs(self.model):  # the target latent: the frozen encoder's view of the clean image
                target = self.model.encode(clean)[1].permute(0, 2, 3, 1)  # [B, h, w, cell_in]
            image_loss = losses.log_mse if r.nca_image_loss == "log_mse" else losses.mse
            aim = clean if self.teacher is None else self.teacher.target(corrupted, clean, steps)
            parts = {
                "image": r.nca_image_weight * image_loss(out.image, aim),
                "latent": r.nca_latent_weight * losses.mse(s_out, target),
                "out_overflow": r.nca_out_overflow * losses.overflow(s_out, 0.0, 1.0),
                "hid_overflow": r.nca_hid_overflow * losses.overflow(s_hid, -1.0, 1.0),
            }
            if r.nca_ssim_weight:
                parts["ssim"] = r.nca_ssim_weight * losses.ssim_loss(out.image, clean)
            if r.nca_estimate_weight:
                parts["estimate"] = r.nca_estimate_weight * image_loss(self._estimate(out, steps, clean), clean)
        else:
            parts = {
                "l1": r.vitca_l1_weight * losses.l1(out.image, clean),
                "out_overflow": r.vitca_overflow_weight * losses.overflow(s_out, 0.0, 1.0),
                "hid_overflow": r.vitca_overflow_weight * losses.overflow(s_hid, -1.0, 1.0),
            }
        return sum(parts.values()), {k: v.detach() for k, v in parts.items()}, out.state.detach()

    def _estimate(self, out, steps: int, clean: torch.Tensor) -> torch.Tensor:
        """The latent path's estimate ``r`` of the rollout ``out``: the same state decoded with the
        fusion head off (the decoder layers it shares with the head get this loss's gradient too)."""
        decoder = self.model.decoder
        if not hasattr(decoder, "fusion"):
            raise ValueError("nca_estimate_weight needs a model with a fusion head (-plus / -blind presets)")
        decoder.fusion_active = False
        try:
            channels = "output" if steps > 0 else "input"
            return self.model.decode(out.state, out.skip, channels=channels, size=clean.shape[-2:])
        finally:
            decoder.fusion_active = True


class SupervisedObjective(nn.Module):
    def __init__(self, model: nn.Module, recipe: Recipe):
        super().__init__()
        self.model, self.recipe = model, recipe

    def forward(self, clean, corrupted):
        restored = self.model(corrupted)
        if self.recipe.family == "nafnet":
            parts = {"neg_psnr": losses.psnr_loss(restored, clean)}
        else:
            parts = {"l1": losses.l1(restored, clean)}
        return sum(parts.values()), {k: v.detach() for k, v in parts.items()}
