"""PatchTST: a channel-independent Transformer over patches of the input.

Nie, Nguyen, Sinthong, Kalagnanam, "A Time Series is Worth 64 Words: Long-term Forecasting
with Transformers", ICLR 2023 (arXiv:2211.14730).

Defaults are PatchTST/64's supervised settings from the paper's code: patch_len 16, stride
8, the input padded at the end with `stride` copies of its last value (one more patch:
L = 512 gives 64 patches), d_model 128, n_heads 16, e_layers 3, d_ff 256, dropout 0.2,
attention dropout 0, head dropout 0, GELU, BatchNorm after each sub-layer (post-norm),
residual attention (each layer's pre-softmax scores are added to the next layer's), a
learned positional embedding initialised U(-0.02, 0.02), RevIN with a per-channel affine map
(`revin=True`; the loader already scales the series, so it can be turned off), and a flatten
head Linear(P * D, H * O) shared by all channels.

Two details follow the paper's code rather than tidiness: the attention output goes through
two dropouts (the output projection's and the residual's), and the scores carried between
layers are the accumulated pre-softmax scores. Our flatten head reads [P, D] patch-major
(the paper's reads [D, P]): a fixed permutation of the head's inputs, the same function
class, and it saves a transpose copy.

Shape legend:
    B  batch             L  input steps (input_size)     H  horizon
    C  target channels   O  outputs per point (n_outputs) N  B * C
    P  patches           D  d_model                       E  heads   e  D / E

Channels are independent (`multivariate = False`): they are folded into the batch and share
every weight except RevIN's per-channel affine map. No covariates.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from tsforge.errors import UserError
from tsforge.models.heads import FlattenHead, RevIN, fold_channels, unfold_channels


class PatchBatchNorm(nn.BatchNorm1d):
    """BatchNorm over the D features of [N, P, D] (statistics over N and P)."""

    def forward(self, x_NPD: torch.Tensor) -> torch.Tensor:
        return super().forward(x_NPD.reshape(-1, x_NPD.shape[-1])).view(x_NPD.shape)


class EncoderLayer(nn.Module):
    """Post-norm Transformer encoder layer with BatchNorm and (optional) residual attention."""

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int,
        dropout: float,
        attn_dropout: float,
        res_attention: bool,
    ):
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.scale = self.head_dim**-0.5
        self.attn_dropout = attn_dropout
        self.res_attention = res_attention
        self.qkv = nn.Linear(d_model, 3 * d_model)  # W_Q, W_K, W_V fused into one matmul
        self.out = nn.Linear(d_model, d_model)
        self.proj_dropout = nn.Dropout(dropout)
        self.dropout_attn = nn.Dropout(dropout)
        self.norm_attn = PatchBatchNorm(d_model)
        self.ff = nn.Sequential(
            nn.Linear(d_model, d_ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(d_ff, d_model)
        )
        self.dropout_ffn = nn.Dropout(dropout)
        self.norm_ffn = PatchBatchNorm(d_model)

    def forward(
        self, x_NPD: torch.Tensor, prev_NEPP: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        N, P, D = x_NPD.shape
        q_NEPe, k_NEPe, v_NEPe = (
            self.qkv(x_NPD).view(N, P, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        )
        if self.res_attention:
            # The scores must be materialised to pass them on, so no fused SDPA kernel here.
            scores_NEPP = (q_NEPe @ k_NEPe.transpose(-1, -2)) * self.scale
            if prev_NEPP is not None:
                scores_NEPP = scores_NEPP + prev_NEPP
            attn_NEPP = F.dropout(
                scores_NEPP.softmax(dim=-1), self.attn_dropout, training=self.training
            )
            o_NEPe = attn_NEPP @ v_NEPe
        else:
            scores_NEPP = None
            o_NEPe = F.scaled_dot_product_attention(
                q_NEPe, k_NEPe, v_NEPe, dropout_p=self.attn_dropout if self.training else 0.0
            )
        o_NPD = o_NEPe.transpose(1, 2).reshape(N, P, D)
        x_NPD = self.norm_attn(x_NPD + self.dropout_attn(self.proj_dropout(self.out(o_NPD))))
        x_NPD = self.norm_ffn(x_NPD + self.dropout_ffn(self.ff(x_NPD)))
        return x_NPD, scores_NEPP


class PatchTST(nn.Module):
    """PatchTST (supervised, channel-independent); returns [B, H, C, O]."""

    supports_exog = False
    multivariate = False

    def __init__(
        self,
        input_size: int,
        horizon: int,
        n_channels: int = 1,
        n_outputs: int = 1,
        patch_len: int = 16,
        stride: int = 8,
        padding_patch: bool = True,
        d_model: int = 128,
        n_heads: int = 16,
        e_layers: int = 3,
        d_ff: int = 256,
        dropout: float = 0.2,
        attn_dropout: float = 0.0,
        head_dropout: float = 0.0,
        res_attention: bool = True,
        revin: bool = True,
        revin_affine: bool = True,
    ):
        super().__init__()
        if d_model % n_heads:
            raise UserError(f"PatchTST d_model ({d_model}) must divide by n_heads ({n_heads})")
        if input_size < patch_len:
            raise UserError(f"PatchTST needs input_size ({input_size}) >= patch_len ({patch_len})")
        self.n_channels = n_channels
        self.patch_len = patch_len
        self.stride = stride
        self.padding_patch = padding_patch
        self.n_patches = (input_size - patch_len) // stride + 1 + int(padding_patch)
        self.revin = RevIN(n_channels, affine=revin_affine) if revin else None
        self.W_P = nn.Linear(patch_len, d_model)
        self.W_pos_PD = nn.Parameter(torch.empty(self.n_patches, d_model).uniform_(-0.02, 0.02))
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            EncoderLayer(d_model, n_heads, d_ff, dropout, attn_dropout, res_attention)
            for _ in range(e_layers)
        )
        self.head = FlattenHead(self.n_patches * d_model, horizon, n_outputs, head_dropout)

    @property
    def blocks(self) -> nn.ModuleList:
        """The encoder layers: the repeated units that sharding (FSDP2) and activation
        checkpointing wrap one by one (`tsforge.train.parallel`)."""
        return self.layers

    def forward(
        self,
        insample_y: torch.Tensor,
        insample_mask: torch.Tensor | None = None,
        hist_exog: torch.Tensor | None = None,
        futr_exog: torch.Tensor | None = None,
        stat_exog: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x_BLC = insample_y
        stats = None
        if self.revin is not None:
            x_BLC, stats = self.revin.normalize(x_BLC, insample_mask)
        x_NL = fold_channels(x_BLC)
        if self.padding_patch:
            x_NL = torch.cat((x_NL, x_NL[:, -1:].expand(-1, self.stride)), dim=1)
        patches_NPl = x_NL.unfold(dimension=1, size=self.patch_len, step=self.stride)
        z_NPD = self.dropout(self.W_P(patches_NPl) + self.W_pos_PD)
        scores = None
        for layer in self.layers:
            z_NPD, scores = layer(z_NPD, scores)
        y_NHO = self.head(z_NPD.flatten(1))
        y_BHCO = unfold_channels(y_NHO, self.n_channels)
        if stats is not None:
            y_BHCO = self.revin.denormalize(y_BHCO, stats)
        return y_BHCO
