"""The rules every fusion of ranked lists shares, wherever it runs: RRF's k and DBSF's normalisation.

Low in the stack on purpose: the façade's fusion (service/search/fusion.py) and the store, which asks
Qdrant to fuse inside a query or fuses itself where Qdrant cannot (DBSF over distances), must rank
alike, so both take these from here and neither imports the other.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["DBSF_SIGMAS", "DEFAULT_RRF_K", "dbsf_normalize"]

# Cormack et al. (SIGIR 2009) found k=60 robust across collections. Qdrant defaults to k=2, which
# lets a single list's top hit outrank a key that several modalities agree on (1/2 vs 1/4 + 1/5 for
# positions 0 vs 2 and 3); multimodal search wants the agreement to win, hence the larger k.
DEFAULT_RRF_K = 60.0

# Qdrant's DBSF maps mean ± 3 sample standard deviations onto [0, 1].
DBSF_SIGMAS = 3.0


def dbsf_normalize(scores: Sequence[float]) -> list[float]:
    """Qdrant's Distribution-Based Score Fusion normalisation: (s - (μ - 3σ)) / 6σ.

    Matches Qdrant exactly: σ is the *sample* standard deviation (n - 1), a single score or σ = 0
    gives 0.5 (no information about where the list sits), and the result is *not* clipped. For
    n <= 10 no score can lie beyond 3σ anyway (max |z| = (n - 1)/√n); beyond that an outlier may
    leave [0, 1] slightly, and clipping would tie two outliers and lose the very hit that stands out.
    """
    if len(scores) < 2:
        return [0.5] * len(scores)
    mean = math.fsum(scores) / len(scores)
    sigma = math.sqrt(math.fsum((s - mean) ** 2 for s in scores) / (len(scores) - 1))
    if sigma == 0.0:
        return [0.5] * len(scores)
    low = mean - DBSF_SIGMAS * sigma
    return [(s - low) / (2 * DBSF_SIGMAS * sigma) for s in scores]
