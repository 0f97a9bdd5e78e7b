"""The model catalog: OpenRouter's `GET /models`, fetched, or read from its cache while that is fresh
(addons/models/catalog.py parses and caches it)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from addons.config.rules import Provider
from launcher.scan import ScanError, ago, client

if TYPE_CHECKING:
    from addons.models.catalog import Catalog


def fetch_catalog(provider: Provider, timeout: float = 30.0) -> tuple[dict, str]:
    """OpenRouter's `GET /models` answer and its URL; ScanError when it cannot be had."""
    import httpx

    url = provider.base_url + "/models"
    try:
        with client(timeout) as http:
            response = http.get(url)
    except httpx.HTTPError as e:
        raise ScanError(f"cannot fetch the model catalog {url}: {type(e).__name__}: {e}") from None
    if response.status_code != 200:
        raise ScanError(f"the model catalog {url} answered {response.status_code}: {response.text[:200]}")
    try:
        data = response.json()
    except ValueError:
        raise ScanError(f"the model catalog {url} is not JSON") from None
    return data, url


def get_catalog(provider: Provider, folder: Path, *, ttl_s: float, refresh: bool, now: float,
                say=lambda text: None) -> tuple[Catalog, str]:
    """The catalog and where it came from ("fetched", "cached", "stale cache"): the cache while it is
    fresh and from the same URL, else a fetch (saved), else, when the fetch fails, any cache."""
    from addons.models import catalog

    path = catalog.cache_path(folder)
    url = provider.base_url + "/models"
    if not refresh:
        cached = catalog.load_cache(path, ttl_s, now)
        if cached is not None and cached.source == url:
            return cached, "cached"
    say(f"fetching the model catalog {url} ...")
    try:
        raw, url = fetch_catalog(provider)
        parsed = catalog.parse_catalog(raw, now, url)
    except (ScanError, catalog.CatalogError) as e:
        stale = catalog.read_cache(path)
        if stale is None or stale.source != url:
            raise ScanError(str(e)) from None
        say(f"{e}; using the cached catalog from {ago(now - stale.fetched_at)} ago")
        return stale, "stale cache"
    try:
        catalog.save_cache(path, raw, now, url)
    except OSError as e:
        say(f"cannot cache the catalog in {path}: {e.strerror or e}")
    return parsed, "fetched"
