"""The blind presets' fusion head (``AEConfig.detail_channels``): a residual correction of the
input at half resolution, the per-image statistics it reads (noise level and its fit to
brightness, impulse counts, noise map, blur kernel, the luminance's noise), the context managers
that fix them while a photo's tiles are restored or training hands in the true blur, and the
Wiener view of deblurrers. The decoder (``autoencoder.py``) ends in it; docs/training/blind.md
has the rounds that shaped it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from . import blur_kernels, deconvolution
from .noise_fit import immerkaer_response, local_sigma, noise_level, noise_variance_fit
from .tv_view import TV_WEIGHT_PER_SIGMA, tv_denoise


class ResidualFusion(nn.Module):
    """``out = clamp(x + s * d, 0, 1)``: the blind presets' head (``AEConfig.detail_channels``).

    ``d`` comes from a residual conv net at half resolution over ``[x, h, r, |x - r|]``: the input
    image, the latent path's estimate ``r`` and their difference pixel-unshuffled (12 channels
    each), and ``h``, the decoder's half-resolution features (the NCA's latent plus the skip).
    Half resolution with unshuffled pixels sees every input pixel at a quarter of the
    full-resolution cost (the FFDNet trick); dilations 1, 2, 4 in the residual layers widen the
    view for blur at no cost. ``s = sigmoid(.)`` is one strength per image from the head's features
    averaged over the whole image: how corrupted the image is, so that a clean one can be left
    alone (``s -> 0``) however much texture it has, which a local correction cannot tell from
    noise. The last conv starts at zero: an untrained model is the identity.

    Options (AEConfig): ``median`` adds the 3x3 median of ``x`` to the inputs; ``limit`` k bounds
    the correction softly, ``L tanh(s d / L)`` with ``L = k sigma_hat + LIMIT_FLOOR`` per image, so
    that a photo without measurable noise comes back nearly untouched (denoisers only: a blurred
    photo has no noise to measure and a large correction to make). ``impulse`` (needs both) adds
    ``g * (median - x)`` to ``d``, ``g`` a per-pixel gate from the head (zero at init), so the
    median is one gate away rather than a function the convs must learn, and widens the bound to
    ``L + 2 iota |median - x|`` with ``iota`` one number per image read from how often the input
    departs far from its median (``impulse_statistics``): impulses are large and rare, which the
    sigma bound alone cuts (docs/training/blind.md, round 3). ``noise_map`` appends two constant
    input maps, the image's noise level and its chroma's (``noise_map_statistics``): the head
    can then filter grey (channel-coherent) noise differently from colour noise (round 4).
    ``deconv`` (deblurrers) adds ``w``, the Wiener deconvolution of ``x`` by the kernel its whole
    image's spectrum points to (``reference/deconvolution.py``; ``x`` itself where none is found),
    as a view and as ``g_w (w - x)`` added after the strength, with a per-pixel gate (zero at
    init; round 5). The kernel is a per-image statistic: tiles read the photo's, and training may
    hand the true one in (``blur_hint``). ``chroma_gate`` (needs ``noise_map``, RGB) keeps the final
    correction's channel mean and scales the rest, its chroma, by ``c = clamp(a . noise_map + b, 0,
    1)`` per image, except at pixels where a channel of ``x`` is saturated (``chroma_projection``):
    grey noise leaves the chroma clean where it did not clip (round 7). ``local_bound`` (needs
    ``limit``) makes the bound's sigma per pixel, ``sqrt(a mu + b)`` at the local brightness ``mu``
    with ``(a, b)`` fitted to the whole image (``noise_fit.noise_variance_fit``): a camera's noise
    grows with brightness, and one sigma per image cut the correction in bright regions (round 8).
    ``tv_view`` adds ``g_t (t - y)`` to ``d`` in every channel, ``y`` the channel mean of ``x``, ``t``
    its total-variation estimate at a weight in proportion to ``y``'s own measured noise
    (``reference/tv_view.py``; a per-image statistic, so tiles read the photo's) and ``g_t`` a
    per-pixel gate from the head (zero at init): at heavy luminance noise TV's luminance beat the
    head's on textured photos (round 10)."""

    def __init__(
        self, features: int, image_channels: int, width: int, depth: int, *,
        median: bool = False, limit: float = 0.0, impulse: bool = False, noise_map: bool = False,
        deconv: bool = False, chroma_gate: bool = False, local_bound: bool = False, tv_view: bool = False,
    ):
        super().__init__()
        if impulse and not (median and limit):
            raise ValueError("ResidualFusion: impulse gates the median and widens the limit; it needs both")
        self.image_channels, self.median, self.limit, self.impulse = image_channels, median, float(limit), impulse
        self.noise_map, self.deconv = noise_map, deconv
        if local_bound and not limit:
            raise ValueError("ResidualFusion: local_bound makes the limit's sigma per pixel; it needs limit > 0")
        self.local_bound, self.tv_view = local_bound, tv_view
        if chroma_gate and not (noise_map and image_channels == 3):
            raise ValueError("ResidualFusion: chroma_gate reads the noise map's chroma share of an RGB image; it needs noise_map")
        # The maps, then the deconvolved view, come last: a head widened from a file without them
        # gets zero columns there and starts as the file's function.
        cin = features + (4 if median else 3) * 4 * image_channels + (NOISE_MAP_FEATURES if noise_map else 0)
        cin += 4 * image_channels if deconv else 0
        self.first = nn.Conv2d(cin, width, 3, padding=1)
        dilations = [2 ** (i % 3) for i in range(depth - 1)]
        self.body = nn.ModuleList(nn.Conv2d(width, width, 3, padding=d, dilation=d) for d in dilations)
        self.out = nn.Conv2d(width, 4 * image_channels, 3, padding=1)
        self.strength = nn.Linear(width, 1)  # s per image; starts at sigmoid(0) = 0.5
        self.noise_gain = nn.Linear(1, 1)  # adds a * log(sigma_hat) + b to the strength's logit
        for conv in (self.first, *self.body):
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)
        if impulse:
            self.gate = nn.Conv2d(width, 4 * image_channels, 3, padding=1)  # g per pixel and channel
            self.impulse_gain = nn.Linear(IMPULSE_FEATURES, 1)  # iota's logit per image
        if deconv:
            self.deconv_gate = nn.Conv2d(width, 4 * image_channels, 3, padding=1)  # g_w per pixel and channel
        if tv_view:
            self.tv_gate = nn.Conv2d(width, 4, 3, padding=1)  # g_t per pixel, shared by the channels
        gated = ((self.gate, self.impulse_gain) if impulse else ()) + ((self.deconv_gate,) if deconv else ())
        gated += (self.tv_gate,) if tv_view else ()
        for layer in (self.out, self.strength, self.noise_gain, *gated):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.chroma_gate = chroma_gate
        if chroma_gate:
            # c = clamp(a . noise_map + b, 0, 1), starting at a = 0, b = 1: exactly the identity, so a
            # head widened from a file starts as the file's function.
            self.chroma_gain = nn.Linear(NOISE_MAP_FEATURES, 1)
            nn.init.zeros_(self.chroma_gain.weight)
            nn.init.ones_(self.chroma_gain.bias)
        if impulse:
            # iota starts nearly closed (0.018): a head widened from a file keeps the file's bound.
            nn.init.constant_(self.impulse_gain.bias, -4.0)
        # Set by whole_image_statistics while tiles of one image are restored: the per-image
        # quantities measured on the whole image instead of on each tile.
        self.fixed_statistics: dict[str, torch.Tensor] | None = None
        # Set by blur_hint while training: each image's true kernel [B, k, k], read instead of the
        # one identified from the image (a 64 px training crop is too small to identify it from).
        self.blur_hint: torch.Tensor | None = None

    def image_statistics(self, x: torch.Tensor, m: torch.Tensor | None = None, *, blur: bool = True) -> dict[str, torch.Tensor]:
        """What the head reads from the whole of ``x [B, C, H, W]``: the noise ``sigma`` ``[B, 1]``,
        for impulse heads the ``impulse`` statistics ``[B, IMPULSE_FEATURES]``, for noise-map heads
        the ``noise_map`` values ``[B, NOISE_MAP_FEATURES]``, for deconvolving heads (unless
        ``blur=False``: the view came with the input) the ``blur`` kernels ``[B, k, k]`` (no blur:
        the centred delta), for local bounds the ``noise_fit`` ``(a, b)`` ``[B, 2]``, for TV views the
        ``luma_sigma`` ``[B, 1]`` (the noise of x's channel mean)."""
        response = immerkaer_response(x)  # read by the level and, for local bounds, the fit
        stats = {"sigma": noise_level(x, response)}
        if self.local_bound:
            stats["noise_fit"] = noise_variance_fit(x, stats["sigma"], response)
        if self.impulse:
            stats["impulse"] = impulse_statistics(x, median3x3(x) if m is None else m, stats["sigma"])
        if self.noise_map:
            stats["noise_map"] = noise_map_statistics(x, stats["sigma"])
        if self.deconv and blur:
            stats["blur"] = self._measured_blur(x)
        if self.tv_view:
            stats["luma_sigma"] = noise_level(x.mean(dim=1, keepdim=True))
        return stats

    def blur_kernels(self, x: torch.Tensor) -> torch.Tensor:
        """The blur of each image of ``x [B, C, H, W]`` as kernels ``[B, k, k]`` (or ``[1, k, k]`` for
        every tile of one image): the whole image's while ``whole_image_statistics`` holds, the
        hint while ``blur_hint`` does, else identified from ``x``'s spectrum."""
        if self.fixed_statistics is not None:
            return self.fixed_statistics["blur"]
        return self._measured_blur(x)

    def _measured_blur(self, x: torch.Tensor) -> torch.Tensor:
        """``x``'s own blur: the hint while ``blur_hint`` holds, else identified from its spectrum."""
        if self.blur_hint is not None:
            if self.blur_hint.shape[0] != x.shape[0]:
                raise ValueError(f"blur_hint holds {self.blur_hint.shape[0]} kernels for a batch of {x.shape[0]} images")
            return self.blur_hint
        return deconvolution.blur_bank()[0][deconvolution.identify_blur(x, deconvolution.MARGIN)]

    def forward(self, h: torch.Tensor, x: torch.Tensor, r: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
        """``w``: the deconvolved view when the encoder made it (``detail_deconv_encoder``); else
        the head makes it from ``x``."""
        m = median3x3(x) if self.median else None
        if self.fixed_statistics is not None:
            stats = self.fixed_statistics
        else:
            stats = self.image_statistics(x, m, blur=w is None)
        views = (x, r, (x - r).abs(), m) if self.median else (x, r, (x - r).abs())
        down = [F.pixel_unshuffle(t, 2) for t in views]  # 3 or 4 x [B, 12, H/2, W/2]
        if self.noise_map:
            values = stats["noise_map"].to(h.dtype)  # [B, 2], or [1, 2] for every tile of one image
            down.append(values[:, :, None, None].expand(h.shape[0], -1, *h.shape[-2:]))  # [B, 2, H/2, W/2]
        if self.deconv:
            w = deconvolved(x, stats["blur"]) if w is None else w
            down.append(F.pixel_unshuffle(w, 2))
        z = F.silu(self.first(torch.cat([h, *down], dim=1)))  # [B, width, H/2, W/2]
        for conv in self.body:
            z = z + F.silu(conv(z))
        delta = F.pixel_shuffle(self.out(z), 2)  # [B, 3, H, W]
        if self.impulse:
            delta = delta + F.pixel_shuffle(self.gate(z), 2) * (m - x)
        if self.tv_view:
            y = x.mean(dim=1, keepdim=True)
            with torch.no_grad():  # a function of the input alone
                t = tv_denoise(y, TV_WEIGHT_PER_SIGMA * stats["luma_sigma"])
            delta = delta + F.pixel_shuffle(self.tv_gate(z), 2) * (t - y)
        sigma = stats["sigma"]  # [B, 1] (or [1, 1] for every tile of one image)
        logit = self.strength(z.mean(dim=(2, 3))) + self.noise_gain(torch.log(sigma + 1e-3))  # [B, 1]
        delta = torch.sigmoid(logit)[:, :, None, None] * delta
        if self.deconv:
            # After the strength: where no blur is found w = x and the term vanishes by itself, and
            # a strength near 0.4 (the local correction's) would cap the inverse at 40 % (round 5).
            delta = delta + F.pixel_shuffle(self.deconv_gate(z), 2) * (w - x)
        if self.limit:
            if self.local_bound:
                bound = self.limit * local_sigma(x, stats["noise_fit"]) + LIMIT_FLOOR  # [B, 1, H, W]
            else:
                bound = (self.limit * sigma + LIMIT_FLOOR)[:, :, None, None]  # [B, 1, 1, 1]
            if self.impulse:
                iota = torch.sigmoid(self.impulse_gain(stats["impulse"]))  # [B, 1]
                bound = bound + 2.0 * iota[:, :, None, None] * (m - x).abs()  # [B, 3, H, W]
            delta = bound * torch.tanh(delta / bound)
        if self.chroma_gate:
            delta = self.chroma_projection(delta, stats["noise_map"].to(delta.dtype), x)
        return (x + delta).clamp(0.0, 1.0)

    def chroma_factor(self, noise_map: torch.Tensor) -> torch.Tensor:
        """``c [B, 1]`` (or ``[1, 1]``) in [0, 1] from the per-image ``noise_map`` values."""
        return self.chroma_gain(noise_map).clamp(0.0, 1.0)

    def chroma_projection(self, delta: torch.Tensor, noise_map: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``delta [B, 3, H, W]`` with its channel mean kept and the rest scaled by ``chroma_factor``,
        except where ``x`` is saturated: noise shared by the channels clips them unequally there
        (a dark red's green and blue at 0), so its chroma is corrupted after all."""
        return chroma_scaled(delta, self.chroma_factor(noise_map)[:, :, None, None], x)


@contextmanager
def whole_image_statistics(model: nn.Module, image: torch.Tensor) -> Iterator[None]:
    """Within the block, every residual fusion head of ``model`` reads its per-image quantities
    (noise sigma, impulse statistics) from ``image [1, C, H, W]`` rather than from the input it is
    given: tiles of one photo are then restored as parts of that photo, not as photos of their own
    (a tile's own estimate can land on the other side of the impulse opening's step than its
    neighbour's). Restored on exit, exceptions included."""
    heads = [m for m in model.modules() if isinstance(m, ResidualFusion)]
    saved = [head.fixed_statistics for head in heads]
    try:
        for head in heads:
            device = head.strength.weight.device  # measured where the image is (a large photo stays on the CPU)
            with torch.no_grad():
                head.fixed_statistics = {k: v.to(device) for k, v in head.image_statistics(image).items()}
        yield
    finally:
        for head, old in zip(heads, saved):
            head.fixed_statistics = old


@contextmanager
def _blur_hints(model: nn.Module, hint) -> Iterator[None]:
    """Within the block, every deconvolving head's ``blur_hint`` is ``hint(head's current one)``;
    restored on exit, exceptions included."""
    heads = [m for m in model.modules() if isinstance(m, ResidualFusion) and m.deconv]
    saved = [head.blur_hint for head in heads]
    try:
        for head in heads:
            head.blur_hint = hint(head)
        yield
    finally:
        for head, old in zip(heads, saved):
            head.blur_hint = old


def blur_hint(model: nn.Module, kernels: torch.Tensor):
    """Within the block, every deconvolving head of ``model`` takes ``kernels [B, k, k]`` as the
    blur of the batch it is given (training: the corruption's true kernels) instead of identifying
    it. Restored on exit, exceptions included."""
    return _blur_hints(model, lambda head: kernels.to(head.strength.weight.device))


def sharp_inputs(model: nn.Module):
    """Within the block, the images ``model`` is given are known to be sharp: a deconvolving head
    (and an encoder reading its view) takes no blur whatever ``blur_hint`` says. Training's targets
    and anchors (the clean images) are encoded so; the hint is the corrupted batch's. Without a
    hint the images' own spectra decide, as always."""

    def no_blur(head):
        if head.blur_hint is None:
            return None
        return blur_kernels.delta(head.blur_hint.shape[-1]).to(head.blur_hint).expand_as(head.blur_hint)

    return _blur_hints(model, no_blur)


def deconvolved(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """``w``: each image of ``x [B, C, H, W]`` Wiener-deconvolved by its kernel (``kernels [B or 1,
    k, k]``), clamped to [0, 1]; an image whose kernel is the centred delta (no blur) is itself.
    A fixed input: no gradient flows through it."""
    with torch.no_grad():
        kernels = kernels.to(device=x.device, dtype=torch.float32).expand(x.shape[0], -1, -1)
        sharp = deconvolution.is_sharp(kernels)  # [B]
        if bool(sharp.all()):
            return x.detach()
        w = deconvolution.wiener(x.detach(), kernels, deconvolution.LAM).clamp(0.0, 1.0)
        return torch.where(sharp[:, None, None, None], x.detach(), w)


# The limit's floor: half an 8-bit level, so a noiseless image (sigma_hat = 0) still gets a
# well-defined, vanishing correction rather than a division by zero.
LIMIT_FLOOR = 0.5 / 255


# Departures from the 3x3 median counted by impulse_statistics: two absolute ones (impulses of the
# paper's sparse noise are N(0, 0.2); on clean photos under 0.3 % of pixels pass 0.2, grass 1.8 %)
# and one relative to the noise sigma (Gaussian noise almost never passes 6 sigma; impulses do).
IMPULSE_CUTS = (0.1, 0.2)
IMPULSE_SIGMAS = 6.0
IMPULSE_FEATURES = 2 + len(IMPULSE_CUTS)  # log sigma_hat, the absolute cuts, the relative cut
IMPULSE_LOG_FLOOR = 1e-4  # the features are log(value + floor): finite for a zero sigma or count


def impulse_statistics(x: torch.Tensor, m: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``[B, IMPULSE_FEATURES]`` per-image features of impulse noise: ``log sigma_hat`` and the log
    fraction of pixels whose channel-mean ``|x - median3(x)|`` passes each cut. Whole-image counts,
    not local ones: locally an impulse and a fine bright detail look alike, but sparse noise makes
    far-from-median pixels common across the image while a clean photo has few."""
    dev = (x - m).abs().mean(dim=1).flatten(1)  # [B, H*W]
    cuts = [dev.new_full((x.shape[0], 1), c) for c in IMPULSE_CUTS] + [IMPULSE_SIGMAS * sigma]  # [B, 1] each
    fractions = [(dev > cut).to(x.dtype).mean(dim=1, keepdim=True) for cut in cuts]
    return torch.log(torch.cat([sigma, *fractions], dim=1) + IMPULSE_LOG_FLOOR)


NOISE_MAP_FEATURES = 2  # the noise level, the chroma's share of it
# sigma_hat times this is the map's first value: sigma in [0, 50/255] maps to [0, 2], the scale of
# the other inputs. The values are not logs: a zero-padded conv sees a constant map at reduced
# weight along the image border, and a large constant (a log floor's -9) would make that an edge.
NOISE_MAP_SCALE = 10.0


def noise_map_statistics(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``[B, NOISE_MAP_FEATURES]``: ``NOISE_MAP_SCALE sigma_hat`` of ``x [B, C, H, W]`` (given as
    ``sigma``) and the ratio of its chroma's ``sigma_hat`` (``x - mean_c(x)``) to it. Per-channel
    noise leaves chroma noise of ``sqrt(1 - 1/C)`` (0.82 for RGB); noise shared by the channels
    (grey noise) leaves none, and neither does a grey photo."""
    chroma = noise_level(x - x.mean(dim=1, keepdim=True))  # [B, 1]
    return torch.cat([NOISE_MAP_SCALE * sigma, chroma / (sigma + LIMIT_FLOOR)], dim=1)


SATURATION_MARGIN = 0.5 / 255  # half an 8-bit level: a PNG's 0 and 255, and exact 0.0 / 1.0


def saturated(x: torch.Tensor) -> torch.Tensor:
    """``[B, 1, H, W]``: 1.0 where some channel of ``x [B, C, H, W]`` is at 0 or 1 (within
    ``SATURATION_MARGIN``), else 0.0."""
    return ((x <= SATURATION_MARGIN) | (x >= 1.0 - SATURATION_MARGIN)).any(dim=1, keepdim=True).to(x.dtype)


def chroma_scaled(delta: torch.Tensor, c: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """``delta [B, 3, H, W]`` with its channel mean kept and its chroma (the rest) scaled by ``c``
    (``[B, 1, 1, 1]`` or a number), except where a channel of ``x`` is ``saturated``."""
    mean = delta.mean(dim=1, keepdim=True)
    return torch.addcmul(mean, torch.maximum(torch.as_tensor(c, dtype=delta.dtype), saturated(x)), delta - mean)


def median3x3(x: torch.Tensor) -> torch.Tensor:
    """Per-channel 3x3 median of ``x [B, C, H, W]`` with replicated borders (exact: the 19
    compare-exchanges of a 9-input median network, no sort or unfold of 9 copies)."""
    b, c, h, w = x.shape
    p = F.pad(x.reshape(b * c, 1, h, w), (1, 1, 1, 1), mode="replicate")
    v = [p[..., i : i + h, j : j + w] for i in range(3) for j in range(3)]

    def sort2(i: int, j: int) -> None:
        v[i], v[j] = torch.minimum(v[i], v[j]), torch.maximum(v[i], v[j])

    for i, j in ((1, 2), (4, 5), (7, 8), (0, 1), (3, 4), (6, 7), (1, 2), (4, 5), (7, 8), (0, 3),
                 (5, 8), (4, 7), (3, 6), (1, 4), (2, 5), (4, 7), (4, 2), (6, 4), (4, 2)):
        sort2(i, j)
    return v[4].reshape(b, c, h, w)
