"""The AMNet head (Fajtl et al., CVPR 2018): soft attention + LSTM over a trunk's map. Modules
and config only.

Shapes: B batch, C trunk channels, H×W feature locations (L = H·W), D projected feature size,
T attention steps, N LSTM hidden size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class AMNetConfig:
    """Architecture of the AMNet head; every field is saved in checkpoints."""

    in_channels: int = 1024  # C: channels of the trunk's feature map
    reduce_dim: int = 0  # R: fixed PCA projection C -> R fitted on training data; 0 = none
    proj_dim: int = 1024  # D: 1x1-conv projection of the map
    att_dim: int = 1024  # size of the additive-attention space
    hidden_size: int = 1024  # N: LSTM hidden size
    fc_dim: int = 512  # first fully connected regression layer
    steps: int = 3  # T: attention steps ("saccades"); 0 = no LSTM
    attention: bool = True  # False: uniform attention (the paper's no-attention ablation)
    dropout_features: float = 0.5  # dropout on the projected map
    dropout_fc: float = 0.5  # dropout before each fully connected layer
    target_mean: float = 0.75  # training targets are (y - target_mean) * target_scale
    target_scale: float = 2.0

    def __post_init__(self) -> None:
        for name in ("in_channels", "proj_dim", "att_dim", "hidden_size", "fc_dim"):
            if getattr(self, name) <= 0:
                raise ValueError(f"AMNetConfig.{name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.reduce_dim <= self.in_channels:
            raise ValueError("AMNetConfig.reduce_dim must be in [0, in_channels]")
        if self.steps < 0:
            raise ValueError(f"AMNetConfig.steps must be >= 0, got {self.steps}")
        for name in ("dropout_features", "dropout_fc"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"AMNetConfig.{name} must be in [0, 1)")
        if self.target_scale <= 0:
            raise ValueError("AMNetConfig.target_scale must be positive")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> AMNetConfig:
        known = cls.__dataclass_fields__
        unknown = set(d) - set(known)
        if unknown:
            raise ValueError(f"unknown AMNetConfig fields: {sorted(unknown)}")
        return cls(**d)


class AMNetOutput(NamedTuple):
    score: torch.Tensor  # (B,) memorability on the [0, 1] scale
    step_scores: torch.Tensor  # (B, T) per-step scores on the [0, 1] scale
    attention: torch.Tensor  # (B, T, H, W), each map sums to 1
    raw: torch.Tensor  # (B,) score in normalised target units (what the loss sees)


class SoftAttention(nn.Module):
    """Additive attention over L locations: a_l = softmax_l(v . tanh(K_l + W h)).

    The keys K = W_x x are computed once per image (``keys``), not once per step."""

    def __init__(self, dim: int, hidden: int, att_dim: int) -> None:
        super().__init__()
        self.key = nn.Linear(dim, att_dim, bias=False)
        self.query = nn.Linear(hidden, att_dim)
        self.score = nn.Linear(att_dim, 1)

    def keys(self, x: torch.Tensor) -> torch.Tensor:
        return self.key(x)  # (B, L, D) -> (B, L, A)

    def forward(self, keys: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        e = torch.tanh(keys + self.query(h).unsqueeze(1))  # (B, L, A)
        return F.softmax(self.score(e).squeeze(-1), dim=-1)  # (B, L)


class AMNetHead(nn.Module):
    """Feature map (B, C, H, W) -> score, per-step scores and attention maps."""

    def __init__(self, cfg: AMNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        r = cfg.reduce_dim
        if r:  # a fixed (not trained) linear map, set by ``set_reduction`` before training
            self.register_buffer("reduce_weight", torch.eye(r, cfg.in_channels))  # (R, C)
            self.register_buffer("reduce_bias", torch.zeros(r))  # (R,)
        self.proj = nn.Conv2d(r or cfg.in_channels, cfg.proj_dim, 1)
        self.proj_bn = nn.BatchNorm2d(cfg.proj_dim)
        self.drop_features = nn.Dropout(cfg.dropout_features)
        self.drop_fc = nn.Dropout(cfg.dropout_fc)
        regress_in = cfg.hidden_size if cfg.steps > 0 else cfg.proj_dim
        self.fc1 = nn.Linear(regress_in, cfg.fc_dim)
        self.fc2 = nn.Linear(cfg.fc_dim, 1)
        if cfg.steps > 0:
            self.init_h = nn.Linear(cfg.proj_dim, cfg.hidden_size)
            self.init_c = nn.Linear(cfg.proj_dim, cfg.hidden_size)
            self.attend = SoftAttention(cfg.proj_dim, cfg.hidden_size, cfg.att_dim)
            self.lstm = nn.LSTMCell(cfg.proj_dim, cfg.hidden_size)

    def regress(self, h: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.fc1(self.drop_fc(h)))  # (B, fc_dim)
        return self.fc2(self.drop_fc(h)).squeeze(-1)  # (B,)

    def to_unit(self, raw: torch.Tensor) -> torch.Tensor:
        """Normalised target units -> the [0, 1] memorability scale (not clamped)."""
        return raw / self.cfg.target_scale + self.cfg.target_mean

    def set_reduction(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Install the fixed projection (R, C) and bias (R,), e.g. a PCA of training features."""
        self.reduce_weight.copy_(weight)
        self.reduce_bias.copy_(bias)

    def reduce(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, R, H, W) with the fixed projection; identity when R = 0."""
        if not self.cfg.reduce_dim:
            return feats
        return F.conv2d(feats, self.reduce_weight[:, :, None, None], self.reduce_bias)

    def forward(self, feats: torch.Tensor) -> AMNetOutput:
        return self.forward_reduced(self.reduce(feats))

    def forward_reduced(self, feats: torch.Tensor) -> AMNetOutput:
        """The head after the fixed reduction (training on pre-reduced features uses this)."""
        B, _, H, W = feats.shape
        x = F.relu(self.proj_bn(self.proj(feats)))  # (B, D, H, W)
        x = self.drop_features(x)
        x = x.flatten(2).transpose(1, 2)  # (B, L, D)
        mean = x.mean(dim=1)  # (B, D)
        T = self.cfg.steps
        if T == 0:
            raw = self.regress(mean)  # (B,)
            empty = feats.new_zeros(B, 0)
            return AMNetOutput(self.to_unit(raw), empty, empty.view(B, 0, H, W), raw)
        h, c = torch.tanh(self.init_h(mean)), torch.tanh(self.init_c(mean))  # (B, N) each
        keys = self.attend.keys(x) if self.cfg.attention else None  # (B, L, A)
        uniform = feats.new_full((B, H * W), 1.0 / (H * W))
        alphas, raws = [], []
        for _ in range(T):
            alpha = self.attend(keys, h) if keys is not None else uniform  # (B, L)
            context = torch.bmm(alpha.unsqueeze(1), x).squeeze(1)  # (B, D)
            h, c = self.lstm(context, (h, c))  # (B, N) each
            raws.append(self.regress(h))
            alphas.append(alpha)
        step_raw = torch.stack(raws, dim=1)  # (B, T)
        attention = torch.stack(alphas, dim=1).view(B, T, H, W)  # (B, T, H, W)
        raw = step_raw.mean(dim=1)  # (B,)
        return AMNetOutput(self.to_unit(raw), self.to_unit(step_raw), attention, raw)
