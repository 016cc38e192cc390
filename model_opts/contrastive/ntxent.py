"""NT-Xent (normalised temperature-scaled cross-entropy), the SimCLR contrastive loss.

For a batch of N pairs of views (z1[i], z2[i]): L2-normalise all 2N embeddings, form the cosine
similarity matrix divided by the temperature, exclude each embedding's similarity with itself, and take
the cross-entropy whose target for row i is its partner view (i + N mod 2N); the loss is the mean over
all 2N rows. Written out because it is six lines on top of `F.cross_entropy` and torch has no built-in.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from har.errors import BadDataError


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    if z1.shape != z2.shape or z1.ndim != 2 or z1.shape[0] < 2:
        raise BadDataError(f"nt_xent needs two (N>=2, D) batches of equal shape, got {tuple(z1.shape)} "
                           f"and {tuple(z2.shape)}")
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = (z @ z.T) / temperature
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(self_mask, float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)
