"""The ECG encoder: a 1D ResNet-18 over any subset of the 12 leads.

Layout (the standard ResNet-18, in 1D): conv k7 s2 -> BN -> ReLU -> maxpool k3 s2 -> four stages of
two BasicBlocks (two k3 convs each; the first block of stages 2-4 halves the length), widths
``w, 2w, 4w, 8w`` (``w = base_width``, 64 in ResNet-18) -> global average pool -> the embedding
``[B, 8w]`` (:meth:`ResNet1d18.forward_features`) -> a linear head to the class logits
(:meth:`ResNet1d18.forward`). The input length ``T`` is free (any sampling rate or duration).

Input: the prepared signals as stored, int16 microvolts ``[B, 12, T]`` in ``ecglm.core.leads.LEADS`` order
(floats in microvolts work too); the model scales them to millivolts (``/ 1000``) itself.

Missing leads. One set of weights serves the 12-lead record, the lead-dropped training samples
(k = 4-6 leads removed) and a single-lead wearable. A lead mask ``[B, 12]`` (bool, True = lead present)
says which leads are there, and the model:

1. zeroes the missing leads with ``torch.where`` (not a multiplication, so that even a NaN or an
   infinity in a missing lead cannot leak into the output): whatever a missing lead holds has NO
   influence on the output;
2. rescales the present leads by ``sqrt(12 / k)`` (k = number of present leads), so that the first
   convolution, which sums over the lead channels, sees inputs of about the same magnitude whatever
   k is: for independent leads the variance of that sum grows with k, so ``sqrt(12/k)`` keeps it
   constant (``12/k``, the dropout-style scale, would assume fully correlated leads and amplify a
   single lead's noise 12-fold);
3. tells the network which leads are present: a FiLM layer maps the mask to a per-channel gain and
   bias of the stem's output (``Linear(12 -> 2w)``, zero-initialised, so it starts as the identity).
   The rescale cannot make a subset look like the full record (the limb leads are linear mixes of
   each other, the precordial ones are not); the FiLM lets the network correct the stem's response
   per subset at almost no cost.

Receptive field (``dilation``). The standard ResNet-18's last layer sees 435 samples, 4.35 s of a
100 Hz record (0.87 s at 500 Hz): a few beats. Rhythms defined by how the RR interval changes over a
breath (sinus arrhythmia: a 3-7 s respiratory cycle) need more. ``dilation`` > 1 dilates the second k3
convolution of every block of stages 3 and 4 (same parameters, same cost), which widens the receptive
field (dilation 2: 627 samples; dilation 4: 1,011, the whole 10 s record at 100 Hz). Measured on the
demo world (a ResNet-18 of width 16 trained 20 epochs on the rhythm labels): dilation 1 reached a test
balanced accuracy of 0.76 with sinus arrhythmia never recognised (0/23, AUC 0.75); dilation 4 reached
0.86 (9/23, AUC 0.94). ``dilation`` 1 (the default) is the standard ResNet-18.

Why leads as channels: a shared single-lead trunk run over each lead and pooled over the leads would
be naturally lead-subset invariant, but it runs the whole trunk 12 times; measured on CPU at the same
width it costs ~18x more. Leads-as-channels with masking keeps the ResNet-18 cost and the lead
geometry (the first convolution mixes leads), and lead dropout in training (``ecglm.train.train_encoder``)
teaches it to work on subsets.

An all-False mask row is allowed (k is clamped to 1): that row's output then depends on the mask alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ecglm.core.leads import LEADS, N_LEADS, canonical_lead

#: Microvolts per millivolt: the stored int16 values are microvolts, the network sees millivolts.
UV_PER_MV = 1000.0
STAGE_BLOCKS = (2, 2, 2, 2)


class BasicBlock1d(nn.Module):
    """Two k3 convs with BN and a residual connection; ``stride`` 2 halves the length."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm1d(out_ch)
        # dilation d with padding d keeps the length: the second conv only widens the receptive field
        self.conv2 = nn.Conv1d(out_ch, out_ch, 3, stride=1, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm1d(out_ch)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv1d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm1d(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, in_ch, L] -> [B, out_ch, ceil(L / stride)]
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.downsample(x))


class ResNet1d18(nn.Module):
    """ResNet-18 1D ECG encoder with a lead mask (see the module docstring).

    ``forward_features(x, mask) -> [B, embed_dim]``, ``forward(x, mask) -> [B, n_classes]`` logits.
    ``embed_dim = 8 * base_width`` (512 for the standard width 64). ``dilation``: of the second conv of
    every block in stages 3 and 4 (1 = the standard ResNet-18; see the module docstring).
    """

    def __init__(self, n_classes: int = 5, base_width: int = 64, n_leads: int = N_LEADS, dilation: int = 1) -> None:
        super().__init__()
        if base_width < 1 or n_classes < 1 or dilation < 1:
            raise ValueError(
                f"base_width, n_classes and dilation must be >= 1, got {base_width}, {n_classes}, {dilation}"
            )
        self.n_leads = n_leads
        self.n_classes = n_classes
        self.base_width = base_width
        self.dilation = dilation
        widths = [base_width * 2**i for i in range(4)]  # w, 2w, 4w, 8w
        self.embed_dim = widths[-1]

        self.stem_conv = nn.Conv1d(n_leads, base_width, 7, stride=2, padding=3, bias=False)
        self.stem_bn = nn.BatchNorm1d(base_width)
        self.mask_film = nn.Linear(n_leads, 2 * base_width)  # mask -> (gain - 1, bias) per stem channel
        stages = []
        in_ch = base_width
        for i, (width, n_blocks) in enumerate(zip(widths, STAGE_BLOCKS)):
            d = dilation if i >= 2 else 1  # stages 3 and 4
            blocks = [BasicBlock1d(in_ch, width, stride=1 if i == 0 else 2, dilation=d)]
            blocks += [BasicBlock1d(width, width, dilation=d) for _ in range(n_blocks - 1)]
            stages.append(nn.Sequential(*blocks))
            in_ch = width
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(self.embed_dim, n_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv1d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm1d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():  # each residual branch starts near zero (standard ResNet practice)
            if isinstance(m, BasicBlock1d):
                nn.init.zeros_(m.bn2.weight)
        nn.init.zeros_(self.mask_film.weight)
        nn.init.zeros_(self.mask_film.bias)

    def prepare_input(self, x: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Microvolts -> millivolts, missing leads zeroed, present ones rescaled by sqrt(12/k).

        x: [B, 12, T] (int16 or float, microvolts); mask: [B, 12] bool or None (all present).
        Returns (x_mV [B, 12, T] float32, mask [B, 12] bool). Raises ValueError on wrong shapes.
        """
        if x.ndim != 3 or x.shape[1] != self.n_leads:
            raise ValueError(f"expected signals [B, {self.n_leads}, T], got {list(x.shape)}")
        if mask is None:
            mask = torch.ones(x.shape[0], self.n_leads, dtype=torch.bool, device=x.device)
        elif mask.shape != (x.shape[0], self.n_leads):
            raise ValueError(f"expected lead mask [{x.shape[0]}, {self.n_leads}], got {list(mask.shape)}")
        mask = mask.to(device=x.device, dtype=torch.bool)
        k = mask.sum(dim=1).clamp_min(1).to(torch.float32)  # [B]
        scale = torch.sqrt(self.n_leads / k) / UV_PER_MV  # [B]
        x_mv = torch.where(mask[:, :, None], x.to(torch.float32), 0.0) * scale[:, None, None]  # [B, 12, T]
        return x_mv, mask

    def forward_features(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The ECG embedding [B, embed_dim]; ``x`` [B, 12, T] microvolts, ``mask`` [B, 12] bool or None."""
        x, mask = self.prepare_input(x, mask)  # [B, 12, T]
        h = self.stem_bn(self.stem_conv(x))  # [B, w, T/2]
        film = self.mask_film(mask.to(h.dtype))  # [B, 2w]
        gain, bias = film.chunk(2, dim=1)  # [B, w] each
        h = h * (1.0 + gain[:, :, None]) + bias[:, :, None]
        h = F.max_pool1d(F.relu(h), kernel_size=3, stride=2, padding=1)  # [B, w, T/4]
        h = self.stages(h)  # [B, 8w, T/32]
        return h.mean(dim=2)  # [B, 8w]

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Class logits [B, n_classes] (apply a sigmoid for multi-label probabilities)."""
        return self.head(self.forward_features(x, mask))  # [B, n_classes]


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def lead_mask_from_names(names: list[str] | tuple[str, ...], batch: int = 1) -> torch.Tensor:
    """A [batch, 12] bool mask with True at the named leads (``canonical_lead`` spellings accepted)."""
    mask = torch.zeros(batch, len(LEADS), dtype=torch.bool)
    for name in names:
        mask[:, LEADS.index(canonical_lead(name))] = True
    return mask

