"""PatchDecoder: a decoder-only patch transformer for pretraining across many series.

The design follows three papers:
- TimesFM (Das, Kong, Sen, Zhou, "A decoder-only foundation model for time-series
  forecasting", ICML 2024, arXiv:2310.10688): input patches with their mask through a
  residual MLP embedding, a causal (decoder-only) transformer stack, an output patch longer
  than the input patch, and any horizon by feeding forecast patches back as new input.
- Chronos-Bolt (Ansari et al., "Chronos: Learning the Language of Time Series", TMLR 2024,
  arXiv:2403.07815, and its Bolt models) and TimesFM's quantile heads: each output step
  carries `n_outputs` values (the loss decides: the quantile levels of `loss=quantile`, one
  value for a point loss).
- PatchTST (Nie et al., ICLR 2023, arXiv:2211.14730): patching and instance normalisation
  (`RevIN` from `heads`, without its affine map, masked steps ignored).

No frequency embedding (frequency-agnostic), no covariates, channels independent (folded
into the batch). Pre-norm blocks with torch's `scaled_dot_product_attention(is_causal=True)`.
`self.blocks` is an `nn.ModuleList` of self-contained blocks (sharding wraps each one).

No parameter depends on `input_size` or `horizon`: a model trained at one horizon loads into
one built for another (`load_state_dict`). A window of L steps is left-padded (mask 0) to
whole patches of `patch_len`; the last position's output patch gives `output_patch_len`
steps; when the horizon is longer, the point output (`rollout_output`, by default the middle
one: the median of an odd number of quantile levels symmetric about 0.5, or a point loss's
only output; set 0 for normal / student_t, whose first output is the location) is cut into
input patches, appended (detached) and the stack runs again, until the horizon is covered.
The statistics of the original window normalise every step.

Training reads only the forecast after the window (the loop's loss is on [B, H, C, O]), not
every position's next patch as TimesFM does.

Shape legend:
    B  batch             L  input steps (input_size)    H  horizon
    C  target channels   O  outputs per point           N  B * C
    P  patches           p  patch_len                   q  output_patch_len
    D  d_model           E  heads                       e  D / E

    model = PatchDecoder(input_size=512, horizon=96, n_outputs=9)
    y_BHCO = model(insample_y_BLC, insample_mask_BLC)
    model.flops_per_window(512, 96)  # analytic forward FLOPs (matmuls and attention)
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from tsforge.errors import UserError
from tsforge.models.heads import RevIN, fold_channels, unfold_channels


class ResidualMLP(nn.Module):
    """TimesFM's residual block: Linear -> SiLU -> Linear, plus a linear skip."""

    def __init__(self, in_features: int, hidden: int, out_features: int, dropout: float = 0.0):
        super().__init__()
        self.hidden = nn.Linear(in_features, hidden)
        self.out = nn.Linear(hidden, out_features)
        self.skip = nn.Linear(in_features, out_features)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.out(F.silu(self.hidden(x)))) + self.skip(x)

    def matmul_params(self) -> int:
        return sum(m.weight.numel() for m in (self.hidden, self.out, self.skip))


class DecoderBlock(nn.Module):
    """Pre-norm causal self-attention and GELU MLP, each with a residual connection."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float):
        super().__init__()
        self.n_heads = n_heads
        self.dropout = dropout
        self.norm_attn = nn.RMSNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.proj = nn.Linear(d_model, d_model, bias=False)
        self.norm_ff = nn.RMSNorm(d_model)
        self.ff_in = nn.Linear(d_model, d_ff, bias=False)
        self.ff_out = nn.Linear(d_ff, d_model, bias=False)
        self.drop = nn.Dropout(dropout)

    def forward(self, x_NPD: torch.Tensor) -> torch.Tensor:
        N, P, D = x_NPD.shape
        q_NEPe, k_NEPe, v_NEPe = (
            self.qkv(self.norm_attn(x_NPD))
            .view(N, P, 3, self.n_heads, D // self.n_heads)
            .permute(2, 0, 3, 1, 4)
        )
        o_NEPe = F.scaled_dot_product_attention(
            q_NEPe, k_NEPe, v_NEPe, is_causal=True,
            dropout_p=self.dropout if self.training else 0.0,
        )  # fmt: skip
        x_NPD = x_NPD + self.drop(self.proj(o_NEPe.transpose(1, 2).reshape(N, P, D)))
        return x_NPD + self.drop(self.ff_out(F.gelu(self.ff_in(self.norm_ff(x_NPD)))))

    def matmul_params(self) -> int:
        return sum(m.weight.numel() for m in (self.qkv, self.proj, self.ff_in, self.ff_out))


def sinusoidal_positions(n: int, d_model: int, device, dtype) -> torch.Tensor:
    """[n, D] the Transformer's sine/cosine positions (no parameters: any length)."""
    pos_P1 = torch.arange(n, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(
        torch.arange(0, d_model, 2, device=device, dtype=torch.float32)
        * (-math.log(10000.0) / d_model)
    )
    out_PD = torch.zeros(n, d_model, device=device, dtype=torch.float32)
    out_PD[:, 0::2] = torch.sin(pos_P1 * freq)
    out_PD[:, 1::2] = torch.cos(pos_P1 * freq[: d_model // 2])
    return out_PD.to(dtype)


class PatchDecoder(nn.Module):
    """Decoder-only patch transformer (TimesFM-like, quantile outputs); returns [B, H, C, O]."""

    supports_exog = False
    multivariate = False

    def __init__(
        self,
        input_size: int,
        horizon: int,
        n_channels: int = 1,
        n_outputs: int = 1,
        patch_len: int = 32,  # steps per input patch (token)
        output_patch_len: int = 128,  # steps forecast per position; a multiple of patch_len
        d_model: int = 128,
        n_heads: int = 4,
        n_layers: int = 4,
        d_ff: int = 512,
        dropout: float = 0.0,
        rollout_output: int | None = None,  # output fed back when rolling out; None: middle
    ):
        super().__init__()
        sizes = dict(patch_len=patch_len, output_patch_len=output_patch_len, d_model=d_model,
                     n_heads=n_heads, n_layers=n_layers, d_ff=d_ff)  # fmt: skip
        for key, value in sizes.items():
            if value < 1:
                raise UserError(f"patch_decoder {key} must be >= 1, got {value}")
        if not 0 <= dropout < 1:
            raise UserError(f"patch_decoder dropout must be in [0, 1), got {dropout}")
        if d_model % n_heads or d_model % 2:
            raise UserError(f"patch_decoder d_model ({d_model}) must be even and divide by "
                            f"n_heads ({n_heads})")  # fmt: skip
        if output_patch_len % patch_len:
            raise UserError(f"patch_decoder output_patch_len ({output_patch_len}) must be a "
                            f"multiple of patch_len ({patch_len})")  # fmt: skip
        point = n_outputs // 2 if rollout_output is None else rollout_output
        if not 0 <= point < n_outputs:
            raise UserError(f"patch_decoder rollout_output ({rollout_output}) must be in "
                            f"[0, {n_outputs}) for n_outputs={n_outputs}")  # fmt: skip
        self.input_size = input_size
        self.horizon = horizon
        self.n_channels = n_channels
        self.n_outputs = n_outputs
        self.patch_len = patch_len
        self.output_patch_len = output_patch_len
        self.d_model = d_model
        self.point = point
        self.norm = RevIN(n_channels, affine=False)  # statistics only: no parameters
        # A patch's values and its mask (1 observed, 0 missing or padding) are the input.
        self.embed = ResidualMLP(2 * patch_len, d_model, d_model, dropout)
        self.blocks = nn.ModuleList(
            DecoderBlock(d_model, n_heads, d_ff, dropout) for _ in range(n_layers)
        )
        for block in self.blocks:  # GPT-2's init: the residual stream stays flat with depth
            for linear in (block.qkv, block.ff_in):
                nn.init.normal_(linear.weight, std=0.02)
            for linear in (block.proj, block.ff_out):
                nn.init.normal_(linear.weight, std=0.02 / math.sqrt(2 * n_layers))
        self.final_norm = nn.RMSNorm(d_model)
        self.head = ResidualMLP(d_model, d_model, output_patch_len * n_outputs, dropout)

    def n_patches(self, steps: int) -> int:
        return -(-steps // self.patch_len)

    def rollout_steps(self, horizon: int) -> int:
        return -(-horizon // self.output_patch_len)

    def _embed(self, x_NL: torch.Tensor, mask_NL: torch.Tensor) -> torch.Tensor:
        """[N, L] values and mask -> [N, P, D] patch embeddings (left-padded to whole patches)."""
        pad = (-x_NL.shape[1]) % self.patch_len
        if pad:
            x_NL, mask_NL = F.pad(x_NL, (pad, 0)), F.pad(mask_NL, (pad, 0))
        N = x_NL.shape[0]
        x_NPp = x_NL.view(N, -1, self.patch_len)
        mask_NPp = mask_NL.view(N, -1, self.patch_len)
        return self.embed(torch.cat((x_NPp * mask_NPp, mask_NPp), dim=-1))

    def _next_patch(self, z_NPD: torch.Tensor) -> torch.Tensor:
        """The stack over [N, P, D] -> the last position's output patch [N, q, O]."""
        z_NPD = z_NPD + sinusoidal_positions(z_NPD.shape[1], self.d_model, z_NPD.device,
                                             z_NPD.dtype)  # fmt: skip
        for block in self.blocks:
            z_NPD = block(z_NPD)
        y_NF = self.head(self.final_norm(z_NPD[:, -1]))
        return y_NF.view(-1, self.output_patch_len, self.n_outputs)

    def forward(
        self,
        insample_y: torch.Tensor,
        insample_mask: torch.Tensor | None = None,
        hist_exog: torch.Tensor | None = None,
        futr_exog: torch.Tensor | None = None,
        stat_exog: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x_BLC, stats = self.norm.normalize(insample_y, insample_mask)
        x_NL = fold_channels(x_BLC)
        mask_NL = torch.ones_like(x_NL) if insample_mask is None \
            else fold_channels(insample_mask.to(x_NL.dtype))  # fmt: skip
        z_NPD = self._embed(x_NL, mask_NL)
        outputs = []
        for step in range(self.rollout_steps(self.horizon)):
            y_NqO = self._next_patch(z_NPD)
            outputs.append(y_NqO)
            if step + 1 < self.rollout_steps(self.horizon):
                fed_NQ = y_NqO[..., self.point].detach()
                z_NPD = torch.cat((z_NPD, self._embed(fed_NQ, torch.ones_like(fed_NQ))), dim=1)
        y_NHO = torch.cat(outputs, dim=1)[:, : self.horizon]
        return self.norm.denormalize(unfold_channels(y_NHO, self.n_channels), stats)

    def flops_per_window(self, input_size: int | None = None, horizon: int | None = None) -> int:
        """Analytic forward FLOPs of one window (all its channels): 2 per multiply-add of every
        matmul weight and each position, plus attention's QK^T and AV (4 P^2 D per layer,
        counted in full as FlopCounterMode does, causal or not). Norms and activations are
        left out, as in the usual MFU convention."""
        L = self.input_size if input_size is None else input_size
        H = self.horizon if horizon is None else horizon
        per_token = sum(b.matmul_params() for b in self.blocks)
        embed = self.embed.matmul_params()
        head = self.head.matmul_params()
        P = self.n_patches(L)
        new = self.output_patch_len // self.patch_len
        total = 2 * embed * P
        for step in range(self.rollout_steps(H)):
            T = P + step * new
            total += 2 * per_token * T + 4 * T * T * self.d_model * len(self.blocks) + 2 * head
            if step:
                total += 2 * embed * new
        return total * self.n_channels
