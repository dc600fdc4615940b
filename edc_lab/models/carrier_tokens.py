"""Carrier tokens: global context for window attention at a linear cost.

Window attention is cheap (each pixel looks at the ``w x w`` pixels of its own
window, so the cost grows linearly with the number of pixels ``N``) but blind:
nothing crosses a window border. Dense self-attention sees everything but costs
``N**2``. FasterViT's *hierarchical attention* (HAT; Hatamizadeh et al.,
"FasterViT: Fast Vision Transformers with Hierarchical Attention", arXiv 2306.06189)
gets both with **carrier tokens**, a few summary tokens per window:

1. **initialise** (``TokenInitializer``): ``CT = AvgPool(DWConv3x3(F))``, one
   token per ``(w/c) x (w/c)`` cell, i.e. ``c x c`` carrier tokens per window,
   kept as a small map ``(B, C, Hc, Wc)`` with ``Hc = ceil(H / w) * c``;
2. **global step**: all carrier tokens of the image attend to each other
   (pre-norm multi-head self-attention + MLP, residual) -- ``(N c^2 / w^2)^2``
   work, tiny because there are ``w^2 / c^2`` times fewer carriers than pixels;
3. **local step**: each window's ``w^2`` pixel tokens, concatenated with its
   ``c^2`` carrier tokens, do self-attention + MLP -- ``N (w^2 + c^2)`` work.
   Pixels thus read the global summary through their carriers, and carriers
   leave the step updated with what their window says;
4. **propagate**: the last block of a stage adds the carriers back onto the map
   (nearest upsampling), so the next stage starts with global context.

EDC (Meng et al., arXiv 2603.20811, https://arxiv.org/abs/2603.20811) uses
carrier-token blocks in stages 3-4 of its three encoder streams. ``DenseAttention``
has the same interface for the ``dense_edc`` comparison.

Whose idea: steps 1-4 are FasterViT's. edc_lab's choices: maps of any size are
padded at the bottom/right to the window and cropped back; padded pixels are
**masked out as attention keys** (so they never change a real token) and the
token initialiser averages only real pixels; carriers are kept as a ``(B, C, Hc,
Wc)`` map and cut per window with einops; no layer scale and no carrier
positional MLP (the depth-wise 3x3 convolution gives the carriers their
position); no relative position bias in the window attention (FasterViT has one;
without it a window's pixels know their place only through the convolutions
before, and the local step is exactly plain self-attention, which a test checks);
sizes are computed from the input, never fixed at construction.
Attention uses ``torch.nn.functional.scaled_dot_product_attention``; setting
``block.keep_attention = True`` switches to an explicit softmax (same numbers,
tested) that stores the weights on ``block.last_attention`` for notebooks.
Importing this module teaches ``torch.utils.flop_counter`` the FLOPs of the CPU
attention kernel, which torch leaves uncounted (see ``_register_cpu_attention_flops``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange, reduce, repeat
from torch import nn

from edc_lab.models.windows import crop_to, pad_to_multiple, valid_mask, window_partition, window_reverse


def _register_cpu_attention_flops() -> None:
    """Teach ``torch.utils.flop_counter.FlopCounterMode`` the CPU kernel of SDPA.

    On a CPU ``F.scaled_dot_product_attention`` dispatches to
    ``aten._scaled_dot_product_flash_attention_for_cpu``, for which torch has no
    FLOP formula, so attention would silently count as 0 FLOPs. We register the
    same formula torch uses for its GPU kernels (``4 * B * heads * Lq * Lk * d``
    forward). Idempotent; does nothing on torch builds that lack the op.
    """
    from torch.utils import flop_counter

    aten = torch.ops.aten
    forward_op = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    backward_op = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
    if forward_op is not None and forward_op not in flop_counter.flop_registry:

        @flop_counter.register_flop_formula(forward_op)
        def _cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
            return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)

    if backward_op is not None and backward_op not in flop_counter.flop_registry:

        @flop_counter.register_flop_formula(backward_op)
        def _cpu_sdpa_backward_flop(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None,
                                    **kwargs) -> int:
            return flop_counter.sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


_register_cpu_attention_flops()

__all__ = [
    "DropPath",
    "Mlp",
    "MultiHeadSelfAttention",
    "TokenInitializer",
    "CarrierTokenAttention",
    "DenseAttention",
    "CarrierTokenStage",
    "carrier_validity",
    "carrier_attention_maps",
    "capacity_matched_mlp_ratio",
]


class DropPath(nn.Module):
    """Stochastic depth: during training drop a whole residual branch per sample with probability ``p``."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"DropPath: p must be in [0, 1), found {p}")
        self.p = p

    def forward(self, branch: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return branch
        keep = 1.0 - self.p
        shape = (branch.shape[0],) + (1,) * (branch.dim() - 1)
        return branch * torch.empty(shape, device=branch.device, dtype=branch.dtype).bernoulli_(keep) / keep


class Mlp(nn.Module):
    """Token-wise feed-forward network ``Linear(C, r C) -> GELU -> Linear(r C, C)`` on ``(..., C)``."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(tokens)))


class MultiHeadSelfAttention(nn.Module):
    """Multi-head self-attention on token sequences ``(N, L, C)``.

    The weights are laid out like ``torch.nn.MultiheadAttention``: one packed
    ``qkv`` projection (query, key, value in that order, heads inside each) and an
    output projection ``proj``, so the two can share weights (a test does).
    The key third of the ``qkv`` bias cannot learn: it adds ``q . b_k`` to every
    score of a query, which the softmax cancels (torch's layer has the same term);
    it is kept for that shared layout.

    ``forward(tokens, attn_mask=None, keep_attention=False)``:
        ``attn_mask`` broadcastable to ``(N, heads, L, L)``: bool (True = may
        attend) or float (added to the scores, e.g. a key bias).
        Returns ``(out (N, L, C), attention (N, heads, L, L) or None)``; the
        attention weights are computed explicitly only when ``keep_attention``.
    """

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"MultiHeadSelfAttention: dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self, tokens: torch.Tensor, attn_mask: torch.Tensor | None = None, keep_attention: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        # (N, L, 3C) -> three tensors (N, heads, L, head_dim)
        query, key, value = rearrange(
            self.qkv(tokens), "n l (three h d) -> three n h l d", three=3, h=self.num_heads
        )
        if keep_attention:
            # explicit softmax(q k^T / sqrt(d) + mask) v, keeping the weights
            scores = torch.einsum("nhqd,nhkd->nhqk", query, key) * self.scale
            if attn_mask is not None:
                scores = scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else scores + attn_mask
            attention = scores.softmax(dim=-1)
            mixed = torch.einsum("nhqk,nhkd->nhqd", attention, value)
        else:
            attention = None
            mixed = F.scaled_dot_product_attention(query, key, value, attn_mask=attn_mask)
        return self.proj(rearrange(mixed, "n h l d -> n l (h d)")), attention


def carrier_validity(size: tuple[int, int], window: int, carriers: int, device=None) -> torch.Tensor:
    """Which carrier cells contain at least one real pixel: bool ``(Hc, Wc)``.

    Cells that lie wholly in the bottom/right padding (possible when
    ``carriers > 1``) are masked out as attention keys.
    """
    cell = window // carriers
    real = valid_mask(size, window, device=device)
    counts = reduce(real, "1 1 (hc ch) (wc cw) -> hc wc", "sum", ch=cell, cw=cell)
    return counts > 0


class TokenInitializer(nn.Module):
    """Step 1 of HAT: ``CT = AvgPool(DWConv3x3(F))``, one carrier per ``(w/c) x (w/c)`` cell.

    Args:
        dim: channels C.
        window: window size w in pixels.
        carriers: c, carrier tokens per window side (c x c per window); must divide w.

    ``forward(x (B, C, H, W)) -> carrier (B, C, Hc, Wc)``, ``Hc = ceil(H / w) * c``.
    Border cells that reach into the padding average their real pixels only.
    """

    def __init__(self, dim: int, window: int, carriers: int = 1):
        super().__init__()
        if carriers < 1 or window % carriers:
            raise ValueError(f"TokenInitializer: carriers ({carriers}) must be >= 1 and divide the window ({window})")
        self.window = window
        self.carriers = carriers
        self.cell = window // carriers
        # depth-wise 3x3: a local, position-aware summary of each pixel
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # 1. depth-wise convolution on the real (unpadded) map
        features = self.dwconv(x)
        # 2. pad to the window so every window has exactly c x c cells
        features, size = pad_to_multiple(features, self.window)
        real = valid_mask(size, self.window, device=x.device).to(features.dtype)
        # 3. average pooling over each cell, counting real pixels only
        sums = reduce(features, "b c (hc ch) (wc cw) -> b c hc wc", "sum", ch=self.cell, cw=self.cell)
        counts = reduce(real, "1 1 (hc ch) (wc cw) -> 1 1 hc wc", "sum", ch=self.cell, cw=self.cell)
        return sums / counts.clamp_min(1.0)


class CarrierTokenAttention(nn.Module):
    """One HAT block: global step among carrier tokens, then local window step with them.

    Args:
        dim: channels C.
        num_heads: attention heads (C divisible by it).
        window: window size w.
        carriers: c, carrier tokens per window side (c x c per window).
        mlp_ratio: hidden width of the MLPs relative to C.
        propagate: add the carriers back onto the map at the end (last block of a stage).
        drop_path: stochastic-depth probability of each residual branch.
        initialize_carriers: own a ``TokenInitializer`` used when ``forward`` gets
            ``carrier=None`` (edc_lab's addition; ``CarrierTokenStage`` sets it only
            on its first block so no parameter goes unused).

    ``forward(x (B, C, H, W), carrier (B, C, Hc, Wc) | None) -> (x (B, C, H, W),
    carrier (B, C, Hc, Wc))`` with ``Hc = ceil(H / w) * c``, ``Wc = ceil(W / w) * c``.

    Set ``keep_attention = True`` to store ``last_attention``: a dict with
    ``global`` (B, heads, Nc, Nc) over carrier tokens in ``(hc wc)`` order,
    ``local`` (B*nh*nw, heads, c^2 + w^2, c^2 + w^2) with the window's carriers
    first, and the sizes needed to put them back on the image (see
    ``carrier_attention_maps``).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window: int = 7,
        carriers: int = 1,
        mlp_ratio: float = 4.0,
        propagate: bool = False,
        drop_path: float = 0.0,
        *,
        initialize_carriers: bool = True,
    ):
        super().__init__()
        if window < 1 or carriers < 1 or window % carriers:
            raise ValueError(
                f"CarrierTokenAttention: need window >= 1 and carriers >= 1 that divide the window, found window={window}, "
                f"carriers={carriers}"
            )
        self.dim, self.num_heads, self.window, self.carriers = dim, num_heads, window, carriers
        self.cell = window // carriers
        self.propagate = propagate
        self.keep_attention = False
        self.last_attention: dict | None = None
        self.token_init = TokenInitializer(dim, window, carriers) if initialize_carriers else None
        # global step (carrier tokens only)
        self.global_norm1 = nn.LayerNorm(dim)
        self.global_attn = MultiHeadSelfAttention(dim, num_heads)
        self.global_norm2 = nn.LayerNorm(dim)
        self.global_mlp = Mlp(dim, mlp_ratio)
        # local step (window tokens + their carrier tokens)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MultiHeadSelfAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp_ratio)
        self.drop_path = DropPath(drop_path)

    def carrier_shape(self, height: int, width: int) -> tuple[int, int]:
        """``(Hc, Wc)`` of the carrier map for an ``H x W`` feature map."""
        return -(-height // self.window) * self.carriers, -(-width // self.window) * self.carriers

    def _has_empty_carrier_cells(self, size: tuple[int, int]) -> bool:
        """Whether some carrier cell lies wholly in the padding (only possible when carriers > 1)."""
        return any((-length) % self.window >= self.cell for length in size)

    def global_step(self, carrier: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Step 2: every carrier token attends to every other one. ``(B, C, Hc, Wc) -> (B, C, Hc, Wc)``."""
        rows = carrier.shape[-2]
        tokens = rearrange(carrier, "b c hc wc -> b (hc wc) c")
        key_mask = None
        if self._has_empty_carrier_cells(size):  # decided from sizes: no device sync
            valid = carrier_validity(size, self.window, self.carriers, device=carrier.device)
            key_mask = rearrange(valid, "hc wc -> 1 1 1 (hc wc)")
        # pre-norm residual attention, then pre-norm residual MLP
        mixed, attention = self.global_attn(self.global_norm1(tokens), key_mask, self.keep_attention)
        tokens = tokens + self.drop_path(mixed)
        tokens = tokens + self.drop_path(self.global_mlp(self.global_norm2(tokens)))
        if self.keep_attention:
            self.last_attention = {"global": attention.detach()}
        return rearrange(tokens, "b (hc wc) c -> b c hc wc", hc=rows)

    def local_step(
        self, x: torch.Tensor, carrier: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Step 3: window tokens plus their carriers do self-attention + MLP.

        ``x (B, C, H, W)``, ``carrier (B, C, Hc, Wc)`` or None (plain window
        attention, Swin without shifts). Returns ``(x (B, C, H, W), carrier)``
        with the carriers updated (None stays None).
        """
        window, c = self.window, self.carriers
        # pad to a multiple of the window; remember which pixels are real
        x_padded, size = pad_to_multiple(x, window)
        height, width = x_padded.shape[-2:]
        rows, cols = height // window, width // window
        # (B, C, Hp, Wp) -> (B*nh*nw, w*w, C)
        tokens = window_partition(x_padded, window)
        padded = (height, width) != tuple(size)  # decided from sizes: no device sync
        if padded:
            key_valid = window_partition(valid_mask(size, window, device=x.device), window)[..., 0] > 0  # (nh*nw, w*w)
        if carrier is not None:
            # this window's c x c carriers go in front of its w*w pixels: (B*nh*nw, c*c + w*w, C)
            window_carriers = rearrange(carrier, "b c (nh ch) (nw cw) -> (b nh nw) (ch cw) c", ch=c, cw=c)
            tokens = torch.cat([window_carriers, tokens], dim=1)
            if padded:
                carrier_valid = rearrange(
                    carrier_validity(size, window, c, device=x.device), "(nh ch) (nw cw) -> (nh nw) (ch cw)", ch=c, cw=c
                )
                key_valid = torch.cat([carrier_valid, key_valid], dim=1)
        # padded pixels are never keys (their own outputs are cropped away below)
        key_mask = repeat(key_valid, "n l -> (b n) 1 1 l", b=x.shape[0]) if padded else None
        # pre-norm residual attention and MLP over each window's sequence
        mixed, attention = self.attn(self.norm1(tokens), key_mask, self.keep_attention)
        tokens = tokens + self.drop_path(mixed)
        tokens = tokens + self.drop_path(self.mlp(self.norm2(tokens)))
        if self.keep_attention:
            self.last_attention = {**(self.last_attention or {}), "local": attention.detach()}
        # split the carriers off again and put both back on their grids
        if carrier is not None:
            window_carriers, tokens = tokens.split([c * c, window * window], dim=1)
            carrier = rearrange(
                window_carriers, "(b nh nw) (ch cw) c -> b c (nh ch) (nw cw)", nh=rows, nw=cols, ch=c, cw=c
            )
        x = crop_to(window_reverse(tokens, window, height, width), size)
        return x, carrier

    def forward(
        self, x: torch.Tensor, carrier: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dim() != 4 or x.shape[1] != self.dim:
            raise ValueError(f"CarrierTokenAttention: expected x (B, {self.dim}, H, W), found {tuple(x.shape)}")
        size = tuple(x.shape[-2:])
        expected = (x.shape[0], self.dim, *self.carrier_shape(*size))
        if self.keep_attention:
            self.last_attention = None
        # 1. initialise the carriers from the map (first block of a stage)
        if carrier is None:
            if self.token_init is None:
                raise ValueError(
                    "CarrierTokenAttention: carrier=None but this block was built with initialize_carriers=False"
                )
            carrier = self.token_init(x)
        elif tuple(carrier.shape) != expected:
            raise ValueError(
                f"CarrierTokenAttention: carrier map for x {tuple(x.shape)} must be {expected}, found {tuple(carrier.shape)}"
            )
        # 2. global step: carriers exchange information across the whole image
        carrier = self.global_step(carrier, size)
        # 3. local step: windows read (and update) their carriers
        x, carrier = self.local_step(x, carrier)
        # 4. last block of a stage: carriers flow back onto their cells
        if self.propagate:
            upsampled = repeat(carrier, "b c hc wc -> b c (hc ch) (wc cw)", ch=self.cell, cw=self.cell)
            x = x + crop_to(upsampled, size)
        if self.keep_attention:
            self.last_attention.update(
                window=self.window, carriers=self.carriers, size=size, carrier_shape=tuple(carrier.shape[-2:])
            )
        return x, carrier


class DenseAttention(nn.Module):
    """Plain global self-attention over all ``H*W`` tokens (pre-norm MHSA + MLP), for comparison.

    Same interface as ``CarrierTokenAttention``: ``forward(x (B, C, H, W),
    carrier=None) -> (x, carrier)``; the carrier is passed through unchanged.
    Cost grows with ``(H W)^2``. ``keep_attention`` stores ``{"dense": (B, heads, N, N)}``.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0):
        super().__init__()
        self.dim = dim
        self.keep_attention = False
        self.last_attention: dict | None = None
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MultiHeadSelfAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp_ratio)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, carrier: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        if x.dim() != 4 or x.shape[1] != self.dim:
            raise ValueError(f"DenseAttention: expected x (B, {self.dim}, H, W), found {tuple(x.shape)}")
        height = x.shape[-2]
        tokens = rearrange(x, "b c h w -> b (h w) c")
        mixed, attention = self.attn(self.norm1(tokens), None, self.keep_attention)
        tokens = tokens + self.drop_path(mixed)
        tokens = tokens + self.drop_path(self.mlp(self.norm2(tokens)))
        if self.keep_attention:
            self.last_attention = {"dense": attention.detach()}
        return rearrange(tokens, "b (h w) c -> b c h w", h=height), carrier


def capacity_matched_mlp_ratio(mlp_ratio: float) -> float:
    """The MLP ratio that gives a ``DenseAttention`` block the parameters of a ``CarrierTokenAttention`` block.

    A HAT block is *two* pre-norm attention + MLP layers (the global step on the
    carriers and the local step on the windows): ``2 (4 C^2 + 2 r C^2)`` weights. A
    dense block has one: ``4 C^2 + 2 r' C^2``. Equal for ``r' = 2 r + 2`` (biases,
    norms and the first block's 3x3 depth-wise carrier convolution, ``O(C)``, aside).
    Our choice for the ``dense_edc`` ablation, so that it compares attention types,
    not capacities (see ``CarrierTokenStage``).
    """
    return 2.0 * mlp_ratio + 2.0


class CarrierTokenStage(nn.Module):
    """``depth`` attention blocks at one resolution: ``forward(x (B, C, H, W)) -> x (B, C, H, W)``.

    The first block initialises the carrier tokens, every block passes them on,
    the last block propagates them back onto the map. ``dense=True`` builds
    ``DenseAttention`` blocks instead (``window``/``carriers`` then unused), by
    default with the wider MLP ``capacity_matched_mlp_ratio(mlp_ratio)`` so the
    stage has as many parameters as its carrier-token version (``match_capacity=False``:
    the same ``mlp_ratio``, e.g. to compare one block's cost).
    ``drop_path`` is one probability or one per block.
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window: int = 7,
        carriers: int = 1,
        mlp_ratio: float = 4.0,
        dense: bool = False,
        drop_path: float | list[float] = 0.0,
        match_capacity: bool = True,
    ):
        super().__init__()
        if depth < 1:
            raise ValueError(f"CarrierTokenStage: depth must be >= 1, found {depth}")
        rates = [drop_path] * depth if isinstance(drop_path, (int, float)) else list(drop_path)
        if len(rates) != depth:
            raise ValueError(f"CarrierTokenStage: {len(rates)} drop_path rates for {depth} blocks")
        self.dense = dense
        if dense:
            dense_ratio = capacity_matched_mlp_ratio(mlp_ratio) if match_capacity else mlp_ratio
            blocks = [DenseAttention(dim, num_heads, dense_ratio, rate) for rate in rates]
        else:
            blocks = [
                CarrierTokenAttention(
                    dim, num_heads, window, carriers, mlp_ratio,
                    propagate=(index == depth - 1), drop_path=rate, initialize_carriers=(index == 0),
                )
                for index, rate in enumerate(rates)
            ]
        self.blocks = nn.ModuleList(blocks)

    def set_keep_attention(self, keep: bool = True) -> None:
        """Store every block's attention weights on ``block.last_attention`` (explicit softmax path)."""
        for block in self.blocks:
            block.keep_attention = keep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        carrier = None
        for block in self.blocks:
            x, carrier = block(x, carrier)
        return x


def carrier_attention_maps(block: CarrierTokenAttention, carrier_index: tuple[int, int], sample: int = 0) -> dict:
    """Where one carrier token looked, from ``block.last_attention`` (run with ``keep_attention = True``).

    Args:
        block: a ``CarrierTokenAttention`` that has run a forward with ``keep_attention``.
        carrier_index: ``(row, col)`` of the carrier on the ``(Hc, Wc)`` carrier map.
        sample: which image of the batch.

    Returns a dict of numpy-free tensors, averaged over heads:
        ``global`` (Hc, Wc): its attention over all carrier tokens (sums to 1);
        ``global_pixels`` (H, W): the same, each carrier spread over its cell's pixels;
        ``local`` (H, W): its attention over the pixels of its own window in the
        local step (zero elsewhere; sums to 1 minus the weight on carriers).
    """
    stored = block.last_attention
    if not stored or "global" not in stored or "local" not in stored:
        raise ValueError("carrier_attention_maps: set block.keep_attention = True and run a forward first")
    window, c = stored["window"], stored["carriers"]
    cell = window // c
    rows_c, cols_c = stored["carrier_shape"]
    height, width = stored["size"]
    row, col = carrier_index
    if not (0 <= row < rows_c and 0 <= col < cols_c):
        raise ValueError(f"carrier_attention_maps: carrier {carrier_index} outside the carrier map {(rows_c, cols_c)}")
    # global: the query row of this carrier, averaged over heads
    global_weights = stored["global"][sample].mean(0)[row * cols_c + col]
    global_map = rearrange(global_weights, "(hc wc) -> hc wc", hc=rows_c)
    global_pixels = crop_to(
        repeat(global_map, "hc wc -> 1 1 (hc ch) (wc cw)", ch=cell, cw=cell), (height, width)
    )[0, 0]
    # local: find its window and its slot among the window's c*c carriers
    windows_per_row = cols_c // c
    window_row, window_col = row // c, col // c
    window_index = sample * (rows_c // c) * windows_per_row + window_row * windows_per_row + window_col
    slot = (row % c) * c + (col % c)
    local_weights = stored["local"][window_index].mean(0)[slot, c * c:]  # over the w*w pixels
    padded = global_map.new_zeros(rows_c // c * window, windows_per_row * window)
    padded[
        window_row * window:(window_row + 1) * window, window_col * window:(window_col + 1) * window
    ] = rearrange(local_weights, "(wh ww) -> wh ww", wh=window)
    return {"global": global_map, "global_pixels": global_pixels, "local": padded[:height, :width]}
