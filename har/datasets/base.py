"""The in-memory form every raw-signal loader returns: one `Recording` of columnar arrays."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Recording:
    """Tri-axial accelerometer samples of many users, in file order.

    Arrays all have length n. `label` indexes into `activities` (class names, in the dataset's
    canonical order). `rejects` counts input records that were not parsed, by kind
    (e.g. ``{"empty_field": 3, "bad_number": 1}``); a loader never drops a record silently.
    """

    user: np.ndarray  # int32 (n,)
    label: np.ndarray  # int16 (n,)
    timestamp_ns: np.ndarray  # int64 (n,)
    xyz: np.ndarray  # float32 (n, 3), m/s^2
    activities: tuple[str, ...]
    sample_rate_hz: float
    source: str
    rejects: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.user)
        for name in ("label", "timestamp_ns"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} rows, user has {n}")
        if self.xyz.shape != (n, 3):
            raise ValueError(f"xyz has shape {self.xyz.shape}, expected ({n}, 3)")

    @property
    def n_samples(self) -> int:
        return len(self.user)

    def select(self, mask: np.ndarray) -> "Recording":
        """Rows where `mask` holds; class list and reject counts are kept."""
        return Recording(self.user[mask], self.label[mask], self.timestamp_ns[mask], self.xyz[mask],
                         self.activities, self.sample_rate_hz, self.source, dict(self.rejects))
