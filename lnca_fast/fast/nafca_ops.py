"""Launchers and the autograd Function of the fused NAFCA step kernels
(``lnca_fast.kernels.nafca_fwd`` / ``nafca_bwd``), and their ahead-of-time compile specs.

``nafca_step(state, folded, update_mask, keep1, keep2, p)`` is one CA step with exactly the
reference's semantics (``NAFCA.forward`` with the same masks); gradients flow to the state and to
the folded parameters (and through ``fold_nafca`` to the module's own parameters).

NOTE (neighbour exchange: halo recompute vs scratch exchange). A cell's gate needs the 9 partial
sums ``t_k = x . w_k`` of its neighbours. Chosen: one program per image; every cell's taps go to a
per-image scratch, ``tl.debug_barrier()``, then each cell gathers its 9 (zero outside the grid):
no redundant work. Counted per cell, paper cell C=64 E=128 F=256 (the folded step the kernels run
is ~109 kFLOP/cell: the model's 93.2 kFLOP of ``work.py`` with conv1+conv2 folded into one
C->2E GEMM); no GPU was available to time either option, so these are counts, not timings:
- scratch exchange (chosen): the 16 (9 used) taps and, since an image is walked in chunks, the
  C pre-gate conv3 values are written and read back: 2 x (16 + 64) x 4 B = 640 B/cell of L1/L2
  traffic and 0 extra FLOPs. The backward exchanges the gate gradient (1 float) the same way and
  parks its other per-cell values (dv, dy: 2C floats) in scratch too.
- halo recompute, tiles of T raster cells of a W-wide image: the front (LN1, the C->2E GEMM,
  SimpleGate, taps: ~36 kFLOP/cell) is recomputed on the 2 (W + 1) halo cells of every tile:
  T=64 at W=16 (64x64 images) +53 % front = +19 kFLOP/cell (+18 % of the step), W=32 +103 % =
  +37 kFLOP/cell (+34 %). The backward is worse: a halo cell's gate gradient needs that cell's
  whole step forward and back, whose forward needs a 2-cell halo: >= 2x the tile's full work at
  W >= 16. For a whole-image tile (8x8 latents: 64 cells = one chunk) both need no halo.
  What halo tiles would buy is parallelism: B * H*W / T programs instead of B, i.e. better GPU
  occupancy when B is below the SM count on large grids; worth measuring on a GPU.

Launch configurations and the padded parameter layout: ``nafca_launch.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..reference.config import NAFCAConfig
from . import backend as backends
from .aot import AOTSpec
from .fold_nafca import FoldedNAFCA
from .nafca_launch import (
    DTYPES,
    KernelDims,
    block_m_choices,
    default_input_precision,
    kernel_dims,
    kernel_params,
    launch_config,
)
from .work import nafca_flops_per_cell, step_backward_bytes_per_cell, step_bytes_per_cell

# Cells the AOT report compiles: the paper's (every latent-nafca preset) and the tiny preset's,
# plus the odd configuration the parity tests use (so the GPU tier compiles what CI checks).
AOT_CELLS = {
    "paper": NAFCAConfig(),
    "tiny": NAFCAConfig(cell_in=5, cell_out=5, hidden=7, embed=12, ffn_expand=2),
    "odd": NAFCAConfig(cell_in=3, cell_out=4, hidden=6, embed=37, ffn_expand=6),
}


# -- validation ---------------------------------------------------------------------------------
def _check_inputs(state, folded: FoldedNAFCA, update_mask, keep1, keep2):
    if not isinstance(state, torch.Tensor) or state.dim() != 4:
        raise ValueError(f"expected a state tensor [B, H, W, C], got {getattr(state, 'shape', type(state).__name__)}")
    b, h, w, c = state.shape
    if min(b, h, w) < 1:
        raise ValueError(f"expected a non-empty state, got shape {tuple(state.shape)}")
    if state.dtype not in DTYPES:
        raise ValueError(f"the fused NAFCA step supports float32/float16/bfloat16 states, got {state.dtype}")
    if not state.is_contiguous():
        raise ValueError("the fused NAFCA step needs a contiguous channels-last state [B, H, W, C] (call .contiguous())")
    if c != folded.channels:
        raise ValueError(f"the state has {c} channels but the cell has {folded.channels}")
    if not state.is_cuda and not backends.interpreter_enabled():
        raise ValueError("the Triton NAFCA step needs a CUDA state (or TRITON_INTERPRET=1 for CPU tensors)")
    if folded.w_in.device != state.device:
        raise ValueError(f"the cell's parameters are on {folded.w_in.device} but the state is on {state.device}")
    if update_mask is not None and (tuple(update_mask.shape) != (b, h, w, 1) or update_mask.device != state.device):
        raise ValueError(f"expected an update mask [{b}, {h}, {w}, 1] on {state.device}, got "
                         f"{tuple(update_mask.shape)} on {update_mask.device}")
    if (keep1 is None) != (keep2 is None):
        raise ValueError("pass both dropout keep masks or neither")
    for keep in (keep1, keep2):
        if keep is not None and (keep.dtype != torch.bool or tuple(keep.shape) != (b, h, w, c) or keep.device != state.device):
            raise ValueError(f"expected bool dropout keep masks [{b}, {h}, {w}, {c}] on {state.device}, got "
                             f"{keep.dtype} {tuple(keep.shape)} on {keep.device}")


@dataclass(frozen=True)
class StepMeta:
    """Everything about a step that is not a tensor (kept on the autograd context)."""

    dims: KernelDims
    eps: float
    drop_scale: float  # 1 / (1 - p) with dropout masks, else 1
    input_precision: str
    block_m: int | None  # forward BM override (tests); None: the launcher's choice


def _mask_args(state, update_mask, keep1, keep2):
    """Kernel arguments for the optional masks. An absent one is a never-read stand-in of the same
    pointer type (the state / a small uint8 buffer), so the kernels compile to the signatures
    ``aot_specs`` reports whichever masks are present."""
    b, h, w, _ = state.shape
    mask = update_mask.to(state.dtype).reshape(b, h, w).contiguous() if update_mask is not None else state
    if keep1 is None:
        k1 = k2 = torch.empty(16, dtype=torch.uint8, device=state.device)
    else:
        k1, k2 = keep1.contiguous().view(torch.uint8), keep2.contiguous().view(torch.uint8)
    return mask, k1, k2, int(update_mask is not None), int(keep1 is not None)


# -- launchers ----------------------------------------------------------------------------------
def nafca_step_fwd(state, params, wparams, update_mask, keep1, keep2, meta: StepMeta) -> torch.Tensor:
    """Launch the forward kernel: one program per image."""
    from ..kernels.nafca_fwd import _nafca_step_fwd_kernel

    b, h, w, _ = state.shape
    d = meta.dims
    cfg = launch_config(d, h * w, "fwd", state.dtype, meta.input_precision, block_m=meta.block_m)
    out = torch.empty_like(state)
    f32 = dict(device=state.device, dtype=torch.float32)
    taps, v = torch.empty(b * h * w * 16, **f32), torch.empty(b * h * w * d.CP, **f32)
    mask, k1, k2, has_mask, has_dropout = _mask_args(state, update_mask, keep1, keep2)
    _nafca_step_fwd_kernel[(b,)](
        state, out, wparams, params, mask, k1, k2, taps, v, h, w, meta.eps, meta.drop_scale, has_mask, has_dropout,
        **cfg.constexprs(), num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    return out


def nafca_step_bwd(state, dout, params, wparams, update_mask, keep1, keep2, meta: StepMeta):
    """Launch the backward kernel; returns ``(d state, d params)`` (params in the kernel layout)."""
    from ..kernels.nafca_bwd import _nafca_step_bwd_kernel

    b, h, w, _ = state.shape
    d = meta.dims
    cfg = launch_config(d, h * w, "bwd", state.dtype, meta.input_precision)
    n_params = params.numel()
    dstate = torch.empty_like(state)
    grads = torch.zeros(b, n_params, device=state.device, dtype=torch.float32)  # one row per image
    f32 = dict(device=state.device, dtype=torch.float32)
    n = b * h * w
    taps, v, dgate = torch.empty(n * 16, **f32), torch.empty(n * d.CP, **f32), torch.empty(n, **f32)
    dv, dy = torch.empty(n * d.CP, **f32), torch.empty(n * d.CP, **f32)
    mask, k1, k2, has_mask, has_dropout = _mask_args(state, update_mask, keep1, keep2)
    _nafca_step_bwd_kernel[(b,)](
        state, dout, dstate, wparams, params, grads, mask, k1, k2, taps, v, dgate, dv, dy,
        h, w, n_params, meta.eps, meta.drop_scale, has_mask, has_dropout,
        **cfg.constexprs(), num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    return dstate, grads.sum(dim=0)  # deterministic reduction over images


class NAFCAStepFunction(torch.autograd.Function):
    """``out = step(state; params)``. Saves only the input state, the masks and the parameters;
    the backward kernel recomputes every intermediate. ``wparams`` is ``params`` in the state's
    dtype (the tl.dot operands), not differentiated separately."""

    @staticmethod
    def forward(ctx, state, params, wparams, update_mask, keep1, keep2, meta: StepMeta):
        ctx.save_for_backward(state, params, wparams, update_mask, keep1, keep2)
        ctx.meta = meta
        return nafca_step_fwd(state, params, wparams, update_mask, keep1, keep2, meta)

    @staticmethod
    def backward(ctx, dout):
        state, params, wparams, update_mask, keep1, keep2 = ctx.saved_tensors
        dstate, dparams = nafca_step_bwd(state, dout.contiguous(), params, wparams, update_mask, keep1, keep2, ctx.meta)
        return dstate, dparams, None, None, None, None, None


def nafca_step(
    state: torch.Tensor,
    folded: FoldedNAFCA,
    update_mask: torch.Tensor | None,
    keep1: torch.Tensor | None,
    keep2: torch.Tensor | None,
    dropout_p: float,
    *,
    input_precision: str | None = None,
    block_m: int | None = None,
) -> torch.Tensor:
    """One fused NAFCA step on ``state [B, H, W, C]`` (CUDA, or CPU under TRITON_INTERPRET=1).

    ``update_mask [B, H, W, 1]`` (None: every cell updates), ``keep1/keep2`` bool
    ``[B, H, W, C]`` dropout keep masks (None: no dropout) with keep scale ``1 / (1 - p)``.
    ``input_precision`` ("ieee"/"tf32") for fp32 dots (default: ``default_input_precision``);
    ``block_m`` overrides the cells-per-chunk choice (tests cover every choice)."""
    _check_inputs(state, folded, update_mask, keep1, keep2)
    params = kernel_params(folded)
    key = ("kernel_params", state.dtype)
    if key not in folded.cache:  # the tl.dot operands in the state's dtype, once per rollout
        folded.cache[key] = params if state.dtype == torch.float32 else params.detach().to(state.dtype)
    meta = StepMeta(
        dims=kernel_dims(folded.channels, folded.embed, folded.ffn, folded.cell_in), eps=folded.eps,
        drop_scale=1.0 / (1.0 - dropout_p) if keep1 is not None else 1.0,
        input_precision=input_precision or default_input_precision(state), block_m=block_m,
    )
    return NAFCAStepFunction.apply(state, params, folded.cache[key], update_mask, keep1, keep2, meta)


# -- ahead-of-time specs ------------------------------------------------------------------------
_SCALARS = {"H": "i32", "W": "i32", "eps": "fp32", "drop_scale": "fp32", "has_mask": "i32", "has_dropout": "i32"}


def _signature(kind: str, dt: str) -> dict[str, str]:
    if kind == "fwd":
        ptrs = {"state_ptr": dt, "out_ptr": dt, "w_ptr": dt, "p_ptr": "fp32", "mask_ptr": dt, "keep1_ptr": "u8",
                "keep2_ptr": "u8", "tap_ptr": "fp32", "v_ptr": "fp32"}
        scalars = dict(_SCALARS)
    else:
        ptrs = {"state_ptr": dt, "dout_ptr": dt, "dstate_ptr": dt, "w_ptr": dt, "p_ptr": "fp32", "grad_ptr": "fp32",
                "mask_ptr": dt, "keep1_ptr": "u8", "keep2_ptr": "u8", "tap_ptr": "fp32", "v_ptr": "fp32",
                "dgate_ptr": "fp32", "dv_ptr": "fp32", "dy_ptr": "fp32"}
        scalars = {"H": "i32", "W": "i32", "n_params": "i32", "eps": "fp32", "drop_scale": "fp32", "has_mask": "i32",
                   "has_dropout": "i32"}
    sig = {name: "*" + t for name, t in ptrs.items()}
    sig.update(scalars)
    sig.update({name: "constexpr" for name in ("C", "CP", "EP", "BE", "F2P", "BF", "BM", "PREC")})
    return sig


def launch_variants() -> list[tuple[str, torch.dtype, str, int]]:
    """Every (kernel, dtype, fp32 dot precision, BM) the launchers can choose."""
    out = []
    for kind in ("fwd", "bwd"):
        for dtype, prec in ((torch.float32, "ieee"), (torch.float32, "tf32"), (torch.float16, "ieee"),
                            (torch.bfloat16, "ieee")):
            if kind == "bwd" and prec == "tf32":
                continue  # the fp32 backward always runs exact dots (nafca_launch NOTE)
            out += [(kind, dtype, prec, bm) for bm in block_m_choices(kind, dtype, prec)]
    return out


def aot_specs() -> list[AOTSpec]:
    """Every kernel at every launch configuration the launchers can choose (``launch_variants``),
    for each cell of ``AOT_CELLS``."""
    from ..kernels.nafca_bwd import _nafca_step_bwd_kernel
    from ..kernels.nafca_fwd import _nafca_step_fwd_kernel

    specs = []
    for cell_name, cell in AOT_CELLS.items():
        dims = kernel_dims(cell.channels, cell.embed, cell.ffn, cell.cell_in)
        flops = nafca_flops_per_cell(cell)
        for kind, dtype, prec, bm in launch_variants():
            cfg = launch_config(dims, bm, kind, dtype, prec, block_m=bm)
            dt = DTYPES[dtype]
            itemsize = torch.empty((), dtype=dtype).element_size()
            if kind == "fwd":  # bytes: the inference rollout (no mask, no dropout)
                fn, nbytes, nflops = _nafca_step_fwd_kernel, step_bytes_per_cell(cell.channels, itemsize), flops
            else:  # training with both dropout sites; FLOPs ~3x (recompute + two GEMMs per GEMM)
                fn = _nafca_step_bwd_kernel
                nbytes = step_backward_bytes_per_cell(cell.channels, itemsize, dropout_sites=2)
                nflops = 3 * flops
            sig = _signature(kind, dt)
            label = (f"{cell_name} C={cell.channels} E={cell.embed} F={cell.ffn} {dt}"
                     + (f" {cfg.PREC}" if dtype == torch.float32 else "") + f" BM={bm} BE={cfg.BE} w{cfg.num_warps}")
            specs.append(AOTSpec(
                name=f"_nafca_step_{kind}_kernel", fn=fn, signature=sig, constexprs=cfg.constexprs(),
                num_warps=cfg.num_warps, num_stages=cfg.num_stages, config=label,
                bytes_per_cell=float(nbytes), flops_per_cell=float(nflops),
                # As the JIT specialises them at run time: every tensor the launchers pass is a
                # fresh or whole allocation, hence 16-byte aligned.
                attrs={(i,): [["tt.divisibility", 16]] for i, t in enumerate(sig.values()) if t.startswith("*")},
            ))
    return specs
