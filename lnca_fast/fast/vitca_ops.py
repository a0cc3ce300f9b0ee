"""The bridge from torch to the fused ViTCA step kernels: weight packing, validation, launch
configuration, the autograd ``Function`` and the ahead-of-time compile specs.

Layout at the boundary: the state is channels-last ``[B, H, W, C]`` (the reference's layout), made
contiguous here; the kernels see the folded weights as one packed buffer (``PackLayout``) whose
gradient comes back as per-program partial sums.

NOTE (launch configuration; no GPU was available, so these are compile-time numbers from
``python -m bench.kernel_report --only vitca``, Triton 3.7.1, sm_80 / sm_90):
- BLOCK_M = 16 cells (one MMA tile), 8 warps, 128-wide products in BN = 32 chunks, num_stages 1,
  2 warps for the forward of small cells (EP <= 32). Forward, LNCA config: 228 / 242 registers,
  0 spill, 26 KB shared memory (fp32); backward (one tile per program, below) 255 / 247
  registers, 0 spill, 50 KB (fp32; fp16 / bf16 248 / 246, 28 KB). Measured and rejected
  (backward, LNCA config, fp32, still with a persistent tile loop): BLOCK_M 32 with 8 warps
  (88-280 bytes of spill), 4 warps (80-192), BN 16 (40-128), BN 64 (0-16 fp32 but 16-112 for
  fp16 / bf16), num_stages 2 (every weight tile double-buffered: 352 KB of shared memory in the
  forward).
- Tiles: a whole image per program costs no halo recompute, so it is used whenever the batch alone
  fills the GPU (and always in the interpreter, which runs programs one by one); otherwise 16 x 16
  or 8 x 8 tiles (backward halo work 1.27x / 1.56x, kernels/vitca_bwd.py). The backward caps the
  programs at 2 per SM, which bounds the partial-gradient buffer to 2 x SMs x 99.2k floats
  (padded LNCA config; ~105 MB fp32 on an H200) and the scratch frames. Each program does one
  tile, so more tiles take ceil(tiles / programs) launches, program p of each adding into partial
  row p: a persistent loop over tiles kept every hoisted invariant live across all phases (32
  bytes of spill, fp32 on sm_80; kernels/vitca_bwd.py NOTE).
- Scratch per program: (tile_h + 4)(tile_w + 4) frame rows of 2 AP floats (forward: K, V) or
  4 AP + 32 NH + 2 EP (backward: K, V, q, dao, softmax, dlogit, two EP-wide handoffs): 1 KB /
  3.5 KB per frame row for the LNCA config; it is written and re-read within one program
  (L1 / L2), never by another.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..reference.config import ViTCAConfig
from ..reference.vitca import positional_encoding
from . import work
from .aot import AOTSpec
from .fold_vitca import FoldedViTCA

SLOTS = 16  # the 3x3 attention window stored as [4, 4] (kernels/vitca_common.SLOTS)
# tl.dot precision of fp32 states: "tf32" (tensor cores, ~1e-3 relative per product on GPU; the
# interpreter computes exactly). Half-precision states use fp16 / bf16 tensor-core inputs.
# NOTE: "ieee" (Triton's FMA dot keeps whole K panels in registers) and "tf32x3" (hi/lo operand
# copies) spill registers in the backward at every configuration tried (sm_80: 136-480 bytes,
# sm_90: 8-104 bytes per thread), so they are not offered; the parameter stays explicit.
INPUT_PRECISIONS = ("tf32",)
_HALF_PRECISION = "tf32"  # the value passed for fp16 / bf16 (unused by tl.dot there)


def _pow2(n: int) -> int:
    """``n`` padded to a power of two, at least 16 (``tl.dot`` needs every dim >= 16 on GPU)."""
    return max(16, 1 << (n - 1).bit_length())


@dataclass(frozen=True)
class PackLayout:
    """Padded sizes of one ViTCA configuration and the order of the packed weight segments."""

    channels: int
    cell_in: int
    embed: int
    heads: int
    mlp: int

    @classmethod
    def of(cls, cfg: ViTCAConfig) -> PackLayout:
        return cls(cfg.channels, cfg.cell_in, cfg.embed, cfg.heads, cfg.mlp)

    @property
    def head_dim(self) -> int:
        return self.embed // self.heads

    @property
    def cp(self) -> int:
        return _pow2(self.channels)

    @property
    def ep(self) -> int:
        return _pow2(self.embed)

    @property
    def dp(self) -> int:
        return _pow2(self.head_dim)

    @property
    def mp(self) -> int:
        return _pow2(self.mlp)

    @property
    def ap(self) -> int:
        return self.heads * self.dp

    def segments(self) -> list[tuple[str, tuple[int, ...]]]:
        """Name and stored shape of each segment, in order (kernels/vitca_common.pack_offsets)."""
        cp, ep, ap, mp = self.cp, self.ep, self.ap, self.mp
        return [
            ("we_t", (cp, ep)), ("be", (ep,)),
            ("wq_t", (ep, ap)), ("bq", (ap,)), ("wk_t", (ep, ap)), ("bk", (ap,)), ("wv_t", (ep, ap)), ("bv", (ap,)),
            ("wo_t", (ap, ep)), ("bo", (ep,)),
            ("w1_t", (ep, mp)), ("b1", (mp,)), ("w2_t", (mp, ep)), ("b2", (ep,)),
            ("wh_t", (ep, cp)), ("bh", (cp,)),
        ]  # fmt: skip

    @property
    def size(self) -> int:
        return sum(int(torch.Size(shape).numel()) for _, shape in self.segments())

    def constexprs(self) -> dict[str, int]:
        return dict(E=self.embed, NH=self.heads, CP=self.cp, EP=self.ep, DP=self.dp, MP=self.mp)

    def scratch_width(self, backward: bool) -> int:
        """Floats per scratch-frame row: K | V (forward), + Q | DAO | A | DL | X | D (backward)."""
        return 4 * self.ap + 2 * self.heads * SLOTS + 2 * self.ep if backward else 2 * self.ap


def pack_weights(folded: FoldedViTCA, layout: PackLayout, dtype: torch.dtype) -> torch.Tensor:
    """The folded weights as one zero-padded buffer in kernel layout (``PackLayout.segments``: each
    weight as ``W^T`` ``[in, out]``). Differentiable: ``F.pad`` and ``cat`` route the packed
    gradient back to the folded tensors, dropping the padding."""
    e, nh, d, cin = layout.embed, layout.heads, layout.head_dim, layout.cell_in
    ep, dp, cp, mp = layout.ep, layout.dp, layout.cp, layout.mp

    def block(w_t, n_rows, n_cols, left=0):  # [r, c] -> [n_rows, n_cols], the block at column `left`
        return F.pad(w_t, (left, n_cols - left - w_t.shape[1], 0, n_rows - w_t.shape[0]))

    def heads_cols(w):  # W [nh * d, E] -> W^T [EP, AP], head h at columns h * DP ..
        return F.pad(w.t().reshape(e, nh, d), (0, dp - d, 0, 0, 0, ep - e)).reshape(ep, nh * dp)

    def heads_vec(bias):  # [nh * d] -> [AP]
        return F.pad(bias.reshape(nh, d), (0, dp - d)).reshape(-1)

    def vec(bias, n, left=0):
        return F.pad(bias, (left, n - left - bias.shape[0]))

    wq, wk, wv = folded.wqkv.split(e)
    bq, bk, bv = folded.bqkv.split(e)
    wo_t = F.pad(folded.wo.t().reshape(nh, d, e), (0, ep - e, 0, dp - d)).reshape(nh * dp, ep)  # [AP, EP]
    parts = [
        block(folded.we.t(), cp, ep), vec(folded.be, ep),
        heads_cols(wq), heads_vec(bq), heads_cols(wk), heads_vec(bk), heads_cols(wv), heads_vec(bv),
        wo_t, vec(folded.bo, ep),
        block(folded.w1.t(), ep, mp), vec(folded.b1, mp), block(folded.w2.t(), mp, ep), vec(folded.b2, ep),
        block(folded.wh.t(), ep, cp, left=cin), vec(folded.bh, cp, left=cin),
    ]  # fmt: skip
    return torch.cat([p.reshape(-1) for p in parts]).to(dtype)


def padded_pe(cfg: ViTCAConfig, layout: PackLayout, height: int, width: int, device) -> torch.Tensor:
    """The positional encoding the kernels read: ``[H * W + 1, EP]`` float32, zero-padded channels
    and a zero guard row (``kernels/vitca_common.opaque_zero``). Unlike the CPU path's folded
    ``be + PE`` table, the kernels add ``be`` (a packed segment) and this constant table
    separately: ``be``'s gradient is then one EP-vector per program, where a folded table's
    would be a per-position ``[H * W, E]`` gradient to reduce over the batch."""
    pe = positional_encoding(height, width, cfg.embed, cfg.pe_order, dtype=torch.float32, device=device)
    return F.pad(pe.reshape(height * width, cfg.embed), (0, layout.ep - cfg.embed, 0, 1)).contiguous()


# -- launch configuration ---------------------------------------------------------------------

# (kernel, "small" = EP <= 32) -> (BLOCK_M, BN, num_warps); see the module NOTE.
_BLOCKS = {
    ("fwd", False): (16, 32, 8), ("fwd", True): (16, 32, 2),
    ("bwd", False): (16, 32, 8), ("bwd", True): (16, 32, 8),
}  # fmt: skip
NUM_STAGES = 1  # software pipelining of the block loop would double-buffer every weight tile in shared memory


@dataclass(frozen=True)
class LaunchConfig:
    block_m: int
    bn: int
    num_warps: int
    tile: tuple[int, int]  # (tile_h, tile_w) in cells
    programs: int
    input_precision: str


# The interpreter (CPU tensors) runs programs one op at a time; its cost grows with the number of
# blocks, not their size, so it gets large blocks. Never compiled for a GPU.
_INTERPRETER_BLOCKS = (64, 64, 1)
BLOCK_CHOICES = ("auto", "gpu")


def block_config(kind: str, layout: PackLayout, device="cuda", blocks: str = "auto") -> tuple[int, int, int]:
    """(BLOCK_M, BN, num_warps) of a kernel (``"fwd"`` / ``"bwd"``) for a channel configuration:
    the GPU table for CUDA tensors (or ``blocks="gpu"``, which tests use to run the GPU
    configurations in the interpreter), else the interpreter's."""
    if blocks not in BLOCK_CHOICES:
        raise ValueError(f"blocks must be one of {BLOCK_CHOICES}, got {blocks!r}")
    if blocks == "gpu" or torch.device(device).type == "cuda":
        return _BLOCKS[kind, layout.ep <= 32]
    return _INTERPRETER_BLOCKS


@functools.lru_cache(maxsize=8)
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def choose_tile(batch: int, height: int, width: int, device: torch.device) -> tuple[int, int]:
    """Whole images when the batch fills the GPU (or in the interpreter); else 16 x 16 or 8 x 8
    tiles, the largest that gives at least one program per SM."""
    if device.type != "cuda":
        return height, width
    sms = _sm_count(device.index if device.index is not None else torch.cuda.current_device())
    for t in (None, 16, 8):
        th, tw = (height, width) if t is None else (min(t, height), min(t, width))
        if batch * -(-height // th) * -(-width // tw) >= sms:
            return th, tw
    return min(8, height), min(8, width)


def _launch_config(kind, state, layout, tile, input_precision, max_programs, blocks) -> LaunchConfig:
    b, h, w, _ = state.shape
    if input_precision not in INPUT_PRECISIONS:
        raise ValueError(f"input_precision must be one of {INPUT_PRECISIONS}, got {input_precision!r}")
    if state.dtype != torch.float32:
        input_precision = _HALF_PRECISION
    th, tw = tile if tile is not None else choose_tile(b, h, w, state.device)
    if not (1 <= th and 1 <= tw):
        raise ValueError(f"tile must be two positive ints, got {tile!r}")
    th, tw = min(th, h), min(tw, w)
    n_tiles = b * -(-h // th) * -(-w // tw)
    if max_programs is None and state.is_cuda and kind == "bwd":
        max_programs = 2 * _sm_count(state.device.index or 0)  # bounds the partial-gradient buffer
    programs = n_tiles if max_programs is None else max(1, min(n_tiles, max_programs))
    block_m, bn, warps = block_config(kind, layout, state.device, blocks)
    return LaunchConfig(block_m, bn, warps, (th, tw), programs, input_precision)


def _check_inputs(state, update_mask, packed, pe, layout: PackLayout):
    if state.dim() != 4 or state.shape[-1] != layout.channels:
        raise ValueError(f"expected a channels-last state [B, H, W, {layout.channels}], got {tuple(state.shape)}")
    if min(state.shape) == 0:
        raise ValueError(f"expected a non-empty state, got {tuple(state.shape)}")
    if state.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"state dtype must be float32, float16 or bfloat16, got {state.dtype}")
    if packed.dtype != state.dtype or packed.numel() != layout.size or packed.device != state.device:
        raise ValueError(
            f"expected packed weights of {layout.size} {state.dtype} values on {state.device}, "
            f"got {packed.numel()} {packed.dtype} on {packed.device}"
        )
    b, h, w, _ = state.shape
    if tuple(pe.shape) != (h * w + 1, layout.ep) or pe.dtype != torch.float32:
        raise ValueError(
            f"expected a float32 PE table [{h * w + 1}, {layout.ep}] (vitca_ops.padded_pe), got {tuple(pe.shape)} {pe.dtype}"
        )
    if update_mask is not None and tuple(update_mask.shape) != (b, h, w, 1):
        raise ValueError(f"expected an update mask of shape {(b, h, w, 1)}, got {tuple(update_mask.shape)}")
    frame = (h + 4) * (w + 4) * layout.scratch_width(backward=True)
    if max(state.numel(), b * frame) >= 2**31:
        raise ValueError(f"state {tuple(state.shape)} too large for 32-bit kernel indexing")


def _aligned(t: torch.Tensor) -> torch.Tensor:
    """Contiguous and 16-byte aligned: the kernels are compiled for aligned pointers (the only
    pointer specialisation Triton makes here; ``aot_specs`` describes exactly that variant)."""
    t = t.contiguous()
    return t if t.data_ptr() % 16 == 0 else t.clone()


def _mask_arg(update_mask, state):
    """The mask pointer and its stride: ``None`` -> a single 1.0 read with stride 0."""
    if update_mask is None:
        return state.new_ones(1), 0
    return _aligned(update_mask.to(state.dtype)), 1


def vitca_step_fwd(state, update_mask, packed, pe, layout: PackLayout, eps: float, *, tile=None,
                   input_precision="tf32", max_programs=None, blocks="auto") -> torch.Tensor:
    """Launch the fused forward: the new state ``[B, H, W, C]``."""
    from ..kernels.vitca_fwd import _vitca_step_fwd_kernel

    _check_inputs(state, update_mask, packed, pe, layout)
    state, packed, pe = _aligned(state), _aligned(packed), _aligned(pe)
    cfg = _launch_config("fwd", state, layout, tile, input_precision, max_programs, blocks)
    b, h, w, _ = state.shape
    th, tw = cfg.tile
    mask, stride_m = _mask_arg(update_mask, state)
    out = torch.empty_like(state)
    frames = cfg.programs * (th + 4) * (tw + 4)  # rows of every program's scratch frame
    scratch = torch.empty(frames * layout.scratch_width(False), device=state.device, dtype=torch.float32)
    tiles_y, tiles_x = -(-h // th), -(-w // tw)
    _vitca_step_fwd_kernel[(cfg.programs,)](
        state, mask, packed, pe, out, scratch,
        h, w, layout.channels, th, tw, tiles_y, tiles_x, b * tiles_y * tiles_x, stride_m, eps,
        **layout.constexprs(), BLOCK_M=cfg.block_m, BN=cfg.bn, IP=cfg.input_precision,
        num_warps=cfg.num_warps, num_stages=NUM_STAGES,
    )  # fmt: skip
    return out


def vitca_step_bwd(state, update_mask, packed, pe, grad_out, layout: PackLayout, eps: float, *, tile=None,
                   input_precision="tf32", max_programs=None, blocks="auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the fused backward: ``(grad_state, grad_packed)``; the weight gradient is the sum of
    the programs' partial buffers (deterministic: no atomics)."""
    from ..kernels.vitca_bwd import _vitca_step_bwd_kernel

    _check_inputs(state, update_mask, packed, pe, layout)
    state, packed, pe, grad_out = _aligned(state), _aligned(packed), _aligned(pe), _aligned(grad_out.to(state.dtype))
    cfg = _launch_config("bwd", state, layout, tile, input_precision, max_programs, blocks)
    b, h, w, _ = state.shape
    th, tw = cfg.tile
    mask, stride_m = _mask_arg(update_mask, state)
    grad_state = torch.empty_like(state)
    partials = torch.zeros(cfg.programs, layout.size, device=state.device, dtype=torch.float32)
    frames = cfg.programs * (th + 4) * (tw + 4)  # rows of every program's scratch frame
    scratch = torch.empty(frames * layout.scratch_width(True), device=state.device, dtype=torch.float32)
    tiles_y, tiles_x = -(-h // th), -(-w // tw)
    n_tiles = b * tiles_y * tiles_x
    # One tile per program (see the module NOTE); launches run in stream order, so program p of
    # every launch adds into the same partial row p.
    for tile0 in range(0, n_tiles, cfg.programs):
        _vitca_step_bwd_kernel[(min(cfg.programs, n_tiles - tile0),)](
            state, mask, packed, pe, grad_out, grad_state, partials, scratch,
            h, w, layout.channels, th, tw, tiles_y, tiles_x, tile0, stride_m, eps,
            **layout.constexprs(), BLOCK_M=cfg.block_m, BN=cfg.bn, IP=cfg.input_precision,
            num_warps=cfg.num_warps, num_stages=NUM_STAGES,
        )  # fmt: skip
    return grad_state, partials.sum(0).to(packed.dtype)


class ViTCAStepFunction(torch.autograd.Function):
    """One fused ViTCA step; saves only the input state (plus mask, packed weights and PE)."""

    @staticmethod
    def forward(ctx, state, update_mask, packed, pe, layout, eps, options):
        ctx.save_for_backward(state, update_mask, packed, pe)
        ctx.layout, ctx.eps, ctx.options = layout, eps, options
        return vitca_step_fwd(state, update_mask, packed, pe, layout, eps, **options)

    @staticmethod
    def backward(ctx, grad_out):
        state, update_mask, packed, pe = ctx.saved_tensors
        grad_state, grad_packed = vitca_step_bwd(state, update_mask, packed, pe, grad_out, ctx.layout, ctx.eps, **ctx.options)
        return grad_state, None, grad_packed, None, None, None, None


def vitca_step(state, update_mask, packed, pe, layout: PackLayout, eps: float, **options) -> torch.Tensor:
    """Differentiable fused step (``options``: ``tile``, ``input_precision``, ``max_programs``,
    ``blocks``; see the launchers)."""
    return ViTCAStepFunction.apply(state, update_mask, packed, pe, layout, eps, options)


# -- ahead-of-time compile specs (bench/kernel_report.py) ---------------------------------------

_POINTERS = {
    "fwd": ("s_ptr", "m_ptr", "w_ptr", "pe_ptr", "out_ptr", "scr_ptr"),
    "bwd": ("s_ptr", "m_ptr", "w_ptr", "pe_ptr", "g_ptr", "ds_ptr", "dw_ptr", "scr_ptr"),
}
_FP32_POINTERS = ("pe_ptr", "scr_ptr", "dw_ptr")
_INTS = {
    "fwd": ("H", "W", "C", "tile_h", "tile_w", "tiles_y", "tiles_x", "n_tiles", "stride_m"),
    "bwd": ("H", "W", "C", "tile_h", "tile_w", "tiles_y", "tiles_x", "tile0", "stride_m"),
}
_DTYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def spec_layouts() -> dict[str, tuple[ViTCAConfig, PackLayout]]:
    """Every ViTCA cell configuration of the presets, one per distinct set of compiled constants,
    keyed by the presets that share it (latent C=64 and pixel C=38 share one: both pad to CP=64
    and C is a runtime argument)."""
    from ..reference.presets import PRESETS

    groups: dict[tuple, list] = {}
    for name, preset in PRESETS.items():
        nca = getattr(preset, "nca", None)
        if isinstance(nca, ViTCAConfig):
            layout = PackLayout.of(nca)
            groups.setdefault(tuple(sorted(layout.constexprs().items())), []).append((name, nca, layout))
    return {"/".join(n for n, _, _ in g if not n.endswith("-tf")): g[0][1:] for g in groups.values()}


def launch_variants():
    """``(state dtype, input_precision)`` pairs the launchers compile distinct kernels for."""
    return [(torch.float32, p) for p in INPUT_PRECISIONS] + [(torch.float16, _HALF_PRECISION), (torch.bfloat16, _HALF_PRECISION)]


def aot_specs() -> list[AOTSpec]:
    """Both kernels at every launch configuration the launchers can choose, for every preset's
    cell configuration. Bytes per cell: ``work.step_bytes_per_cell`` (forward) and
    ``work.step_backward_bytes_per_cell`` (backward), with the update mask; FLOPs per cell: the
    model's forward FLOPs (``work.vitca_flops_per_cell``) and twice that for the backward."""
    from ..kernels.vitca_bwd import _vitca_step_bwd_kernel
    from ..kernels.vitca_fwd import _vitca_step_fwd_kernel

    fns = {"fwd": _vitca_step_fwd_kernel, "bwd": _vitca_step_bwd_kernel}
    specs = []
    for presets, (cfg, layout) in spec_layouts().items():
        flops = work.vitca_flops_per_cell(cfg)
        for dtype, precision in launch_variants():
            tname, itemsize = _DTYPES[dtype], torch.finfo(dtype).bits // 8
            for kind, fn in fns.items():
                block_m, bn, warps = block_config(kind, layout)  # the GPU table
                signature = {p: "*fp32" if p in _FP32_POINTERS else "*" + tname for p in _POINTERS[kind]}
                signature.update({a: "i32" for a in _INTS[kind]}, eps="fp32")
                constexprs = dict(layout.constexprs(), BLOCK_M=block_m, BN=bn, IP=precision)
                signature.update({k: "constexpr" for k in constexprs})
                if kind == "fwd":
                    nbytes, nflops = work.step_bytes_per_cell(cfg.channels, itemsize, update_mask=True), flops
                else:
                    nbytes, nflops = work.step_backward_bytes_per_cell(cfg.channels, itemsize, update_mask=True), 2 * flops
                label = f"{presets} {tname}" + (f" {precision}" if dtype == torch.float32 else "") + f" BLOCK_M={block_m} BN={bn}"
                aligned = {(fn.arg_names.index(p),): [["tt.divisibility", 16]] for p in _POINTERS[kind]}
                specs.append(AOTSpec(
                    name=fn.__name__, fn=fn, signature=signature, constexprs=constexprs, num_warps=warps,
                    num_stages=NUM_STAGES, config=label, bytes_per_cell=nbytes, flops_per_cell=nflops, attrs=aligned,
                ))  # fmt: skip
    return specs
