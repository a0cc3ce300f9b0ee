"""What the paper's four metrics run, per model family, as callables the harness times.

Inference: one batch through the model in eval mode, no autograd; NCA models run ``steps`` steps
(64) at ``update_rate`` (0.5 by default, as the paper's latency script did for every NCA; the
latent models train and test at 1.0, selectable with ``--update-rate model``).

Training, one *data batch* as the official trainers process it (official §4), so that
"a training step" costs what it cost in the paper:
- NAFNet / Restormer: forward, MSE loss, backward, optimizer step.
- pixel ViTCA: a pool iteration then a fresh iteration (2 optimizer steps), each a ``steps``-step
  rollout at the model's update rate (0.5), L1 + overflow loss.
- latent models, **AE phase** (NCA bypassed): gradient step 1 (reconstruction of clean, noisy and
  a derangement of the clean batch, triplet hinge on the latents, masked noise term) and gradient
  step 2 (the equivalence loss with swapped skips, perturbed latent); 2 optimizer steps.
- latent models, **NCA phase** (AE frozen, BatchNorm in eval): a fresh iteration from the seed and
  a pool iteration continuing from the fresh iteration's final state (the pool at its first
  batch); each a ``steps``-step rollout (32 by default: the longest the paper trains) at the
  model's update rate (1.0), the official loss (image MSE, latent MSE, overflow).
Every optimizer step is Adam (eps 1e-7) after per-tensor gradient normalisation, as official.
The rollout length is fixed (not drawn from U{8..32}) so every provider does the same work.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from lnca_fast.reference.nca_model import NCAModel
from torch import nn

from lnca_fast import create_model

BASELINES = ("nafnet", "restormer")
LATENT = ("latent-nafca", "latent-vitca")
LEARNING_RATES = {"nafnet": 1e-3, "restormer": 3e-4, "vitca": 1e-3}  # official; latent models 1e-2


def is_nca(model_name: str) -> bool:
    """NCA models (``tiny-`` test presets included) have a fast variant; the baselines do not."""
    return model_name.removeprefix("tiny-") not in BASELINES


def is_latent(model_name: str) -> bool:
    return "latent" in model_name


def build(model_name: str, provider: str, device: torch.device) -> nn.Module:
    """The model for a provider: ``reference`` (eager reference) or ``fast`` (the drop-in fast model;
    on CPU its backend is pinned to the CPU fast path, never Triton's interpreter)."""
    if provider not in ("reference", "fast"):
        raise ValueError(f"provider must be 'reference' or 'fast', got {provider!r}")
    if provider == "fast" and not is_nca(model_name):
        raise ValueError(f"{model_name} has no fast variant")
    model = create_model(model_name, fast=provider == "fast").to(device)
    if provider == "fast":
        model.set_backend("torch" if device.type == "cpu" else "auto")
    return model


def dummy_batch(batch: int, size: int, device: torch.device, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform-random clean images and a noisy copy (half the pixels get N(0, 0.2) noise)."""
    clean = torch.rand(batch, 3, size, size, generator=generator).to(device)
    hit = (torch.rand(batch, 1, size, size, generator=generator) < 0.5).float().to(device)
    noise = 0.2 * torch.randn(batch, 3, size, size, generator=generator).to(device)
    return clean, (clean + hit * noise).clamp(0, 1)


def inference_fn(model: nn.Module, x: torch.Tensor, steps: int, update_rate: float | None) -> Callable[[], object]:
    """One inference batch. ``update_rate=None`` uses the model's own rate."""
    model.eval()
    generator = torch.Generator(device=x.device).manual_seed(0)

    def run():
        with torch.no_grad():
            if isinstance(model, NCAModel):
                return model.rollout(x, steps, update_rate=update_rate, generator=generator).image
            return model(x)

    return run


# -- training --------------------------------------------------------------------------------------


def _normalised_adam_step(optimizer: torch.optim.Optimizer) -> None:
    # Official: g <- g / (||g||_2 + 1e-8) per tensor before Adam.
    with torch.no_grad():
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad.div_(p.grad.norm() + 1e-8)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


class TrainingWorkload:
    """The per-batch training work of one model in one phase (``"train"``, ``"ae"`` or ``"nca"``)."""

    def __init__(self, model: nn.Module, model_name: str, phase: str, steps: int):
        if phase not in ("train", "ae", "nca"):
            raise ValueError(f"phase must be 'train', 'ae' or 'nca', got {phase!r}")
        self.model, self.name, self.phase, self.steps = model, model_name, phase, steps
        lr = LEARNING_RATES.get(model_name.removeprefix("tiny-"), 1e-2)
        self._set_modes()
        if phase == "nca":  # AE frozen
            for p in model.parameters():
                p.requires_grad_(False)
            for p in model.nca.parameters():
                p.requires_grad_(True)
            params = list(model.nca.parameters())
        elif phase == "ae":
            params = [p for n, p in model.named_parameters() if not n.startswith("nca.")]
        else:
            params = list(model.parameters())
        self.optimizer = torch.optim.Adam(params, lr=lr, eps=1e-7)
        self.generator = torch.Generator(device=next(model.parameters()).device).manual_seed(0)

    def _set_modes(self) -> None:
        self.model.train()
        if self.phase == "nca":  # the frozen AE's BatchNorm runs in inference mode, as in Keras
            self.model.eval()
            self.model.nca.train()

    def tensors(self) -> list[torch.Tensor]:
        """Everything this workload keeps alive between batches (for the CPU memory tracker)."""
        out = [*self.model.parameters(), *self.model.buffers()]
        for state in self.optimizer.state.values():
            out += [v for v in state.values() if isinstance(v, torch.Tensor)]
        return out

    def train_batch(self, clean: torch.Tensor, noisy: torch.Tensor) -> None:
        {"train": self._train_batch, "ae": self._ae_batch, "nca": self._nca_batch}[self.phase](clean, noisy)

    def val_batch(self, clean: torch.Tensor, noisy: torch.Tensor, steps: int = 64) -> None:
        """Validation: the AE phase reconstructs, NCA models run ``steps`` (64) steps at their own rate."""
        self.model.eval()
        with torch.no_grad():
            if isinstance(self.model, NCAModel):
                self.model.rollout(noisy, 0 if self.phase == "ae" else steps, generator=self.generator)
            else:
                self.model(noisy)
        self._set_modes()

    # -- per family -----------------------------------------------------------------------------
    def _train_batch(self, clean, noisy):
        if not isinstance(self.model, NCAModel):  # NAFNet / Restormer
            F.mse_loss(self.model(noisy), clean).backward()
            _normalised_adam_step(self.optimizer)
            return
        state = None  # pixel ViTCA: pool iteration, then fresh (the pool state is the last fresh state)
        for _ in range(2):
            out = self.model.rollout(noisy, self.steps, state=state, generator=self.generator)
            layout = self.model.layout
            rgb, hidden = out.state[..., layout.output], out.state[..., layout.hidden_slice]
            loss = 100 * F.l1_loss(out.image, clean) + 100 * _overflow(rgb, 0, 1) + 100 * _overflow(hidden, -1, 1)
            loss.backward()
            _normalised_adam_step(self.optimizer)
            state = out.state.detach()

    def _ae_batch(self, clean, noisy):
        m = self.model
        negative = clean.roll(1, dims=0)  # a derangement of the batch (B >= 2)
        mask = (noisy - clean != 0).to(clean.dtype)
        # Gradient step 1: reconstruction of [A; P; N] (three passes), triplet hinge, noise term.
        outs = [m.rollout(t, 0) for t in (clean, noisy, negative)]
        loss = 100 * sum(F.mse_loss(o.image, t) for o, t in zip(outs, (clean, noisy, negative)))
        lat = [o.latent.flatten(1) for o in outs]
        loss = loss + 10 * F.relu(F.mse_loss(lat[0], lat[1]) - F.mse_loss(lat[0], lat[2]) + 1.0)
        loss = loss + 10 * F.mse_loss(mask * outs[1].image, mask * noisy)
        loss.backward()
        _normalised_adam_step(self.optimizer)
        # Gradient step 2: equivalence, skips swapped, the clean latent perturbed by N(0, 0.5^2).
        skip_a, lat_a = m.encode(clean)
        skip_p, lat_p = m.encode(noisy)
        eps = 0.5 * torch.randn(lat_a.shape, generator=self.generator, device=lat_a.device)
        dec_p = m.decode(m.seed(lat_p), skip_a, channels="input")
        dec_a = m.decode(m.seed(lat_a + eps), skip_p, channels="input")
        loss = 100 * (F.mse_loss(mask * dec_p, mask * noisy) + F.mse_loss(mask * dec_a, mask * clean))
        loss.backward()
        _normalised_adam_step(self.optimizer)

    def _nca_batch(self, clean, noisy):
        m, layout = self.model, self.model.layout
        with torch.no_grad():
            target_latent = m.encode(clean)[1].permute(0, 2, 3, 1)  # [B, h, w, cell_out]
        state = None  # fresh iteration from the seed, then the pool iteration from its final state
        for _ in range(2):
            out = m.rollout(noisy, self.steps, state=state, generator=self.generator)
            s_out, s_hid = out.state[..., layout.output], out.state[..., layout.hidden_slice]
            loss = 100 * F.mse_loss(out.image, clean) + 100 * F.mse_loss(s_out, target_latent)
            loss = loss + _overflow(s_out, 0, 1) + _overflow(s_hid, -1, 1)
            loss.backward()
            _normalised_adam_step(self.optimizer)
            state = out.state.detach()


def _overflow(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    return (x - x.clamp(lo, hi)).abs().mean()


def phases(model_name: str) -> tuple[str, ...]:
    return ("ae", "nca") if is_latent(model_name) else ("train",)
