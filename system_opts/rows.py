"""Channel-last row helpers shared by the fp32 and the int8 flat kernels (`system_opts.kernels`,
`system_opts.kernels_int8`); they sit below both so that neither kernel module imports the other's.

- `pad_rows`: (N, T, C) -> (N, T + 2p, C), a fresh array with `pad_value` in the 2p new rows;
- `im2col_view`: a zero-copy, read-only (N, T_out, K * C) view of padded rows (row t = rows t .. t+K-1).
Known limits: `im2col_view` needs C-contiguous input (it derives the row view from the strides) and
stride 1, dilation 1 (the only convolutions the flattener accepts).
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided


def pad_rows(x: np.ndarray, padding: int, pad_value: np.ndarray | None) -> np.ndarray:
    """(N, T, C) -> (N, T + 2p, C) with `pad_value` (per channel, default 0) in the new rows."""
    n, t, c = x.shape
    xp = np.empty((n, t + 2 * padding, c), dtype=x.dtype)
    xp[:, padding:padding + t] = x
    fill = 0 if pad_value is None else pad_value
    xp[:, :padding] = fill
    xp[:, padding + t:] = fill
    return xp


def im2col_view(xp: np.ndarray, kernel_size: int) -> np.ndarray:
    """Read-only (N, T_out, K * C) view of padded (N, T_pad, C) C-contiguous rows: row t = xp[t:t+K].ravel()."""
    n, t_pad, c = xp.shape
    s = xp.strides
    return as_strided(xp, (n, t_pad - kernel_size + 1, kernel_size * c), (s[0], s[1], s[2]), writeable=False)
