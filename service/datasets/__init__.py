"""Real anime datasets, fetched as pinned npm packages and mapped to `AnimeDocument`s.

`bangumi.load_bangumi` is the entry point; `npm` does the fetching and caching, `vocabulary` holds the
curated tag → genre/theme/studio mapping. May import `service.domain` and `service.platform` only.
"""

from __future__ import annotations

from service.datasets.bangumi import BANGUMI_DATA, BGMD, load_bangumi
from service.datasets.npm import DatasetFetchError, NpmPackage, fetch_package

__all__ = ["BANGUMI_DATA", "BGMD", "DatasetFetchError", "NpmPackage", "fetch_package", "load_bangumi"]
