"""Picture queries for a workspace built by `python -m benchmarks.latency setup`.

That workspace stores, for its i-th anime (the order of `queries.json` "ids"), the synthetic cover
`synthetic_cover(i, size=(600, 850))` as picture and thumbnail. A query picture is that cover degraded the
way a screenshot is (`near_duplicate`: cropped, shrunk, re-encoded), so the right answer is known.
The covers are random shapes unrelated to the anime and the CLIP weights are random: picture queries
measure the retrieval and fusion machinery, not CLIP's understanding of anime art.
"""

from __future__ import annotations

import base64
import functools
import json
from pathlib import Path

COVER_SIZE = (600, 850)


def pictured_ids(workspace: Path) -> list[str]:
    """The workspace's anime in cover order, or [] when it was not built with synthetic covers."""
    listing = workspace / "queries.json"
    if not listing.is_file():
        return []
    return list(json.loads(listing.read_text()).get("ids", []))


@functools.lru_cache(maxsize=4096)
def screenshot(position: int) -> str:
    """base64 JPEG of a degraded copy of cover `position` (cached: several rankers ask for the same one)."""
    from tests.builders import encode_image, near_duplicate, synthetic_cover

    image = near_duplicate(synthetic_cover(position, size=COVER_SIZE))
    return base64.b64encode(encode_image(image, "JPEG", quality=85)).decode()
