"""Building a model for training: the fast NCA model with the CPU fast path on CPU (the Triton
interpreter is never used for training, whatever ``TRITON_INTERPRET`` says), recipe overrides of
the update rate and the NCA dropout, and freezing all but one phase's parameters."""

from __future__ import annotations

import torch
from torch import nn

from ..factory import create_model
from .recipe import Recipe


def build_for_training(recipe: Recipe, device: torch.device) -> nn.Module:
    """The recipe's model on ``device``, initialised from ``recipe.seed`` (every rank alike)."""
    from ..data.batches import derive_seed

    overrides = {}
    if recipe.update_rate is not None and recipe.nca:
        overrides["update_rate"] = recipe.update_rate
    if recipe.nca_dropout is not None and recipe.family == "latent-nafca":
        overrides["nca"] = {"dropout": recipe.nca_dropout}
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's global RNG
        torch.manual_seed(derive_seed(recipe.seed, 99))
        model = create_model(recipe.model, fast=recipe.nca and recipe.fast_model, **overrides).to(device)
    if recipe.zero_head and recipe.family == "latent-nafca":
        with torch.no_grad():  # official NAFCA head is glorot-initialised (official §2); ViTCA's is zero
            model.nca.conv_out.weight.zero_()
            model.nca.conv_out.bias.zero_()
    if recipe.init_weights:
        load_all(model, recipe.init_weights)
    if recipe.init_ae:
        load_autoencoder(model, recipe.init_ae)
    if recipe.fusion_gate_init is not None:
        set_fusion_gate(model, recipe.fusion_gate_init)
    if hasattr(model, "set_backend"):
        model.set_backend("torch" if device.type == "cpu" else "auto")
    return model


def set_fusion_gate(model: nn.Module, gate: float) -> None:
    """Start the fusion head (-plus presets) at ``g = gate`` everywhere: its last conv is zero, so the
    gate logit is its bias alone."""
    fusion = getattr(getattr(model, "decoder", None), "fusion", None)
    if fusion is None:
        raise ValueError("fusion_gate_init needs a model with a fusion head (a latent-*-plus preset)")
    c = fusion.image_channels
    with torch.no_grad():
        fusion.out.weight.zero_()
        fusion.out.bias.zero_()
        fusion.out.bias[:c] = float(torch.logit(torch.tensor(gate, dtype=torch.float64)))  # gate half, then delta


def slowed_decoder_params(model: nn.Module, recipe: Recipe) -> list[nn.Parameter]:
    """The decoder parameters that learn at ``nca_decoder_lr_scale`` x the NCA's rate in the NCA
    phase: all of them, except, with ``nca_estimate_weight``, the layers that feed only the latent
    path's estimate ``r`` of a residual fusion head (``trans_conv_layer_1``, ``to_image``). The
    slow rate protects the head's function, which those layers do not feed; r's own loss then
    moves them at the NCA's rate (at the slow rate, r rose from 11 to 14 dB in 44 epochs)."""
    decoder = model.decoder
    params = list(decoder.parameters())
    if not (recipe.nca_estimate_weight and decoder.config.detail_channels):
        return params
    own = {id(p) for layer in (decoder.trans_conv_layer_1, decoder.to_image) for p in layer.parameters()}
    return [p for p in params if id(p) not in own]


def only_named(model: nn.Module, prefixes: tuple[str, ...]) -> list[nn.Parameter]:
    """The parameters of ``model`` whose names start with one of ``prefixes`` (``Recipe.train_only``);
    a prefix that names none is an error, listing the model's top-level modules."""
    named = list(model.named_parameters())
    for prefix in prefixes:
        if not any(name.startswith(prefix) for name, _ in named):
            tops = sorted({name.split(".")[0] for name, _ in named})
            raise ValueError(f"train_only: {prefix!r} names no parameter of the model (its modules: {', '.join(tops)})")
    return [p for name, p in named if name.startswith(tuple(prefixes))]


def freeze(model: nn.Module, keep: list[nn.Parameter]) -> None:
    """``requires_grad`` only for the parameters in ``keep``."""
    ids = {id(p) for p in keep}
    for p in model.parameters():
        p.requires_grad_(id(p) in ids)


def load_all(model: nn.Module, path: str) -> None:
    """Every tensor of ``model`` from a weights file, or a training state's best weights (keys
    prefixed ``best.``; ``model.`` when no best is recorded). Tensors the file lacks keep their
    initial values (a run of an earlier version of a preset, before a layer was added; reported);
    tensors the model lacks, or too few matches, are an error. A tensor the file holds smaller (a
    layer given more inputs, as ``ResidualFusion``'s median view, or more channels) fills the
    leading block from the file; new input columns (dim 1) start at zero and new output rows keep
    their initial values, so with the new channels last the model starts as exactly the file's
    function and the new ones still learn (Net2Net-style widening; reported). Rows a SimpleGate
    multiplies in pairs (a module's ``gate_halved_rows``) widen per half, keeping the pairs."""
    from safetensors.torch import load_file

    tensors = load_file(path)
    for prefix in ("best.", "model."):
        if any(k.startswith(prefix) for k in tensors):
            tensors = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            break
    own = set(model.state_dict())
    missing = sorted(own - set(tensors))
    if set(tensors) - own or len(missing) * 10 > len(own):
        matched = len(set(tensors) & own)
        raise ValueError(f"{path} does not hold this model's weights ({matched} of {len(own)} tensors match by name)")
    state = model.state_dict()
    halved = _gate_halved_keys(model, state)
    widened = [k for k in tensors if _smaller(tensors[k], state[k])]
    for key in widened:
        saved, grown = tensors[key], state[key].clone()
        if grown.dim() >= 2:
            grown[:, saved.shape[1] :] = 0.0
        # (first row in grown, rows): the leading block, or for gated rows each half of the file's
        # leading the matching half of the wider rows, so a gate multiplies the pairs it did.
        half, wide = saved.shape[0] // 2, grown.shape[0] // 2
        blocks = ((0, saved[:half]), (wide, saved[half:])) if key in halved else ((0, saved),)
        columns = tuple(slice(0, n) for n in saved.shape[1:])
        for start, rows in blocks:
            grown[(slice(start, start + rows.shape[0]), *columns)] = rows
        tensors[key] = grown
    model.load_state_dict(tensors, strict=False)
    if widened:
        print(f"init_weights: {', '.join(widened)} are wider than in {path}: new inputs start at zero weight")
    if missing:
        print(f"init_weights: {path} lacks {', '.join(missing)}: kept at their initial values")


def _gate_halved_keys(model: nn.Module, state: dict[str, torch.Tensor]) -> set[str]:
    """Keys of ``state`` (``model``'s) whose rows come in two gated halves (a module's
    ``gate_halved_rows``)."""
    prefixes = tuple(
        f"{name}.{layer}." if name else f"{layer}."
        for name, module in model.named_modules()
        for layer in getattr(module, "gate_halved_rows", ())
    )
    return {k for k in state if prefixes and k.startswith(prefixes)}


def _smaller(saved: torch.Tensor, own: torch.Tensor) -> bool:
    """``saved`` fits in ``own``'s leading block, larger only in output rows / input columns."""
    return (
        saved.dim() == own.dim() >= 1 and saved.shape != own.shape
        and all(a <= b for a, b in zip(saved.shape[:2], own.shape[:2])) and saved.shape[2:] == own.shape[2:]
    )


def load_autoencoder(model: nn.Module, path: str) -> None:
    """Copy the encoder and decoder (weights and BatchNorm statistics) from a weights file or a
    training state file (keys prefixed ``model.``) into a latent model."""
    from safetensors.torch import load_file

    tensors = load_file(path)
    if any(k.startswith("model.") for k in tensors):
        tensors = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    # The fusion head (-plus presets) is not trained in the autoencoder phase (it is off there), so
    # it is not part of what an autoencoder file contributes: it keeps this model's initial values.
    phase_one = ("encoder.", "decoder.")
    ae = {k: v for k, v in tensors.items() if k.startswith(phase_one) and not k.startswith("decoder.fusion.")}
    own = {k for k in model.state_dict() if k.startswith(phase_one) and not k.startswith("decoder.fusion.")}
    if set(ae) != own:
        matched = len(set(ae) & own)
        raise ValueError(f"{path} does not hold this model's autoencoder ({matched} of {len(own)} tensors match by name)")
    model.load_state_dict(ae, strict=False)
