"""OpenRouter's model catalog: parsing, fitness for coding, free models, the cache and its TTL, prices."""

from __future__ import annotations

import json
import os

import pytest
from fake_upstream import OPENROUTER_MODELS, openrouter_catalog

from addons.models import catalog
from addons.models.catalog import Catalog, CatalogError, Prices, cost_usd, fit_for_coding, is_free, parse_catalog

NOW = 1_800_000_000.0


def entry(model_id: str, **fields) -> dict:
    base = {"id": model_id, "name": model_id, "context_length": 131072,
            "pricing": {"prompt": "0.000001", "completion": "0.000002"},
            "supported_parameters": ["tools", "tool_choice", "max_tokens"],
            "top_provider": {"context_length": 131072, "max_completion_tokens": 16384},
            "architecture": {"input_modalities": ["text"], "output_modalities": ["text"]}}
    return {**base, **fields}


@pytest.fixture(scope="module")
def fake_catalog() -> Catalog:
    return parse_catalog({"data": openrouter_catalog()}, NOW, "https://fake/api/v1/models")


def test_parses_the_documented_fields(fake_catalog):
    sonnet = fake_catalog.get("anthropic/claude-sonnet-4.5")
    assert sonnet.name == "Anthropic: Claude Sonnet 4.5"
    assert sonnet.context_length == 1_000_000 and sonnet.max_completion_tokens == 64000
    assert (sonnet.prompt_price, sonnet.completion_price) == (0.000003, 0.000015)
    assert (sonnet.cache_read_price, sonnet.cache_write_price) == (0.0000003, 0.00000375)
    assert sonnet.tools and "reasoning" in sonnet.supported_parameters
    assert sonnet.input_modalities == ("text", "image", "file") and sonnet.vendor == "anthropic"
    coder = fake_catalog.get("qwen/qwen3-coder:free")
    assert coder.max_completion_tokens is None and coder.cache_read_price is None
    assert len(fake_catalog) == len(openrouter_catalog())


def test_a_negative_price_is_unknown_and_bad_entries_are_left_out_not_guessed():
    found = parse_catalog({"data": [
        entry("openrouter/auto", pricing={"prompt": "-1", "completion": "-1"}),
        entry("a/b", pricing={"prompt": "abc", "completion": None}, context_length="big",
              supported_parameters="tools", architecture=[]),
        {"name": "no id"}, "junk", entry("a/b"),  # a repeated id keeps the first
    ]}, NOW)
    assert found.unreadable == 2 and [m.id for m in found.models] == ["openrouter/auto", "a/b"]
    auto, odd = found.models
    assert auto.prompt_price is None and auto.completion_price is None and auto.prices() is None
    assert odd.prompt_price is None and odd.context_length == 131072  # falls back to top_provider's
    assert not odd.tools and odd.input_modalities == ()
    for bad in ({}, {"data": {}}, [], None):
        with pytest.raises(CatalogError):
            parse_catalog(bad, NOW)


def test_fit_for_coding_names_why_a_model_is_left_out(fake_catalog):
    verdicts = {m.id: fit_for_coding(m) for m in fake_catalog.models}
    assert verdicts["qwen/qwen3-coder"] and verdicts["qwen/qwen3-coder"].reason.startswith("tools")
    assert not verdicts["meta-llama/llama-3.3-8b-instruct:free"]
    assert "no tool calling" in verdicts["meta-llama/llama-3.3-8b-instruct:free"].reason
    assert not verdicts["fake/small-context"] and "8192 < 32000" in verdicts["fake/small-context"].reason
    assert not verdicts["openrouter/auto"] and "no fixed price" in verdicts["openrouter/auto"].reason
    small = fake_catalog.get("fake/small-context")
    assert fit_for_coding(small, min_context=4096).reason.startswith("at most 2048 output tokens")
    assert fit_for_coding(small, min_context=4096) == catalog.Fitness(False, "at most 2048 output tokens < 4096")
    image_only = parse_catalog({"data": [entry("x/img", architecture={"output_modalities": ["image"]})]}, NOW)
    assert "answers in image" in fit_for_coding(image_only.models[0]).reason
    fit, left_out = catalog.fit_models(fake_catalog.models)
    assert {m.id for m in fit} >= {"qwen/qwen3-coder:free", "anthropic/claude-sonnet-4.5", "fake/good"}
    assert set(left_out) == {"meta-llama/llama-3.3-8b-instruct:free", "fake/small-context", "openrouter/auto"}


def test_free_is_the_suffix_or_zero_prices(fake_catalog):
    free = {m.id for m in fake_catalog.models if is_free(m)}
    assert {"qwen/qwen3-coder:free", "nvidia/nemotron-3-super-120b-a12b:free", "openrouter/free",
            "openrouter/fake-fail-429:free"} <= free
    assert "qwen/qwen3-coder" not in free and "openrouter/auto" not in free  # unknown price is not free
    suffixed = parse_catalog({"data": [entry("v/m:free")]}, NOW).models[0]  # priced, but a :free variant
    assert is_free(suffixed)


def test_cache_round_trip_ttl_and_a_corrupt_file(tmp_path):
    path = catalog.cache_path(tmp_path / "state")
    raw = {"data": [entry("a/one"), entry("b/two:free", pricing={"prompt": "0", "completion": "0"})]}
    catalog.save_cache(path, raw, NOW, "https://or/api/v1/models")
    assert oct(path.stat().st_mode & 0o777) == "0o600" and oct(path.parent.stat().st_mode & 0o777) == "0o700"
    stored = json.loads(path.read_text())
    assert stored["fetched_at"] == NOW and stored["data"] == raw["data"] and stored["version"] == 1
    fresh = catalog.load_cache(path, ttl_s=3600, now=NOW + 3599)
    assert fresh is not None and [m.id for m in fresh.models] == ["a/one", "b/two:free"]
    assert fresh.source == "https://or/api/v1/models"
    assert catalog.load_cache(path, ttl_s=3600, now=NOW + 3600) is None  # expired: fetch again
    assert catalog.load_cache(path, ttl_s=3600, now=NOW - 10) is None  # from the future: the clock moved
    assert catalog.read_cache(path).fetched_at == NOW  # the gateway takes any age
    path.write_text("{not json")
    assert catalog.read_cache(path) is None
    assert list(path.parent.glob("catalog.json.corrupt-*"))  # kept aside for a post-mortem
    path.write_text(json.dumps({"data": []}))  # no fetch time
    assert catalog.read_cache(path) is None
    assert catalog.read_cache(tmp_path / "missing.json") is None


def test_catalog_file_rereads_only_when_the_scan_replaced_it(tmp_path):
    path = tmp_path / "catalog.json"
    now = [0.0]
    book = catalog.CatalogFile(path, check_every_s=30, clock=lambda: now[0])
    assert book.current() is None and book.price_for("openrouter", "a/one") is None
    catalog.save_cache(path, {"data": [entry("a/one")]}, NOW, "u")
    assert book.current() is None  # not checked again within 30 s
    now[0] = 31
    assert book.price_for("openrouter", "a/one").prompt == 0.000001
    catalog.save_cache(path, {"data": [entry("a/one", pricing={"prompt": "0.000005", "completion": "0.00001"})]},
                       NOW + 1, "u")
    os.utime(path, ns=(10**18, 10**18))  # a different mtime even on a coarse clock
    now[0] = 62
    assert book.price_for("openrouter", "a/one").prompt == 0.000005
    path.unlink()
    now[0] = 93
    assert book.current() is None


@pytest.mark.parametrize("provider,model,expected_id,match", [
    ("openrouter", "qwen/qwen3-coder:free", "qwen/qwen3-coder:free", "exact"),
    ("my-or", "qwen/qwen3-coder", "qwen/qwen3-coder", "exact"),  # whatever the rules call OpenRouter
    ("openrouter", "qwen/qwen3-coder:nitro", "qwen/qwen3-coder", "variant"),
    ("openrouter", "moonshotai/kimi-k2.6:free", "moonshotai/kimi-k2.6", "free_variant"),
    ("anthropic", "claude-sonnet-4.5", "anthropic/claude-sonnet-4.5", "name"),
    ("anthropic", "claude-sonnet-4-5", "anthropic/claude-sonnet-4.5", "name"),
    ("anthropic", "claude-sonnet-4-5-20250929", "anthropic/claude-sonnet-4.5", "dated_name"),
    ("anthropic", "claude-sonnet-4-5-latest", "anthropic/claude-sonnet-4.5", "dated_name"),
    ("openai", "gpt-5", "openai/gpt-5", "name"),
    ("openai", "GPT-5", "openai/gpt-5", "name"),
    ("openai", "gpt-5-2025-08-07", "openai/gpt-5", "dated_name"),
    ("deepseek", "deepseek-v4-flash", "deepseek/deepseek-v4-flash", "name"),
    ("together", "qwen/qwen3-coder", "qwen/qwen3-coder", "exact"),
])
def test_price_for_maps_routed_targets_to_catalog_prices(fake_catalog, provider, model, expected_id, match):
    prices = fake_catalog.price_for(provider, model)
    assert prices is not None and (prices.model_id, prices.match) == (expected_id, match)


def test_price_for_refuses_to_guess(fake_catalog):
    assert fake_catalog.price_for("openai", "gpt-6") is None
    assert fake_catalog.price_for("openrouter", "openrouter/auto") is None  # variable price
    # a local host of other vendors' models is not billed like the hosted model of the same name
    assert fake_catalog.price_for("ollama", "qwen3-coder") is None
    assert fake_catalog.price_for("lmstudio", "qwen3-coder") is None
    assert fake_catalog.price_for("openai", "") is None
    # a direct provider never takes a :free variant's zero price
    free_only = parse_catalog({"data": [entry("vendorx/solo:free", pricing={"prompt": "0", "completion": "0"})]}, NOW)
    assert free_only.price_for("vendorx", "solo") is None
    # several vendors list the name at different prices: none of them is the provider's
    clash = parse_catalog({"data": [entry("a/same"), entry("b/same", pricing={"prompt": "1", "completion": "1"})]},
                          NOW)
    assert clash.price_for("openai", "same") is None
    assert clash.price_for("a", "same").model_id == "a/same"  # the provider's own vendor wins


def test_cost_usd_bills_cache_reads_and_writes_at_their_prices():
    sonnet = Prices(0.000003, 0.000015, 0.0000003, 0.00000375, "anthropic/claude-sonnet-4.5")
    # 10k prompt tokens of which 8k read from cache and 1k written to it, 500 out
    assert cost_usd(sonnet, 10_000, 500, 8_000, 1_000) == pytest.approx(
        1_000 * 3e-6 + 8_000 * 0.3e-6 + 1_000 * 3.75e-6 + 500 * 15e-6)
    plain = Prices(0.000001, 0.000002)  # no cache prices: cached tokens cost what input costs
    assert cost_usd(plain, 1000, 100, 600) == pytest.approx(1000 * 1e-6 + 100 * 2e-6)
    assert cost_usd(plain, None, None, None) == 0.0
    assert cost_usd(plain, 100, 0, 500) == pytest.approx(100 * 1e-6)  # more cached than sent: capped
    assert cost_usd(Prices(0.0, 0.0, 0.0, 0.0), 10**6, 10**6, 0) == 0.0
    assert Prices(0.0, 0.0).free and not plain.free


def test_the_fake_catalog_is_varied_like_the_real_one():
    """The fake's OpenRouter catalog: the facts the scan tests rely on."""
    entries = {e["id"]: e for e in openrouter_catalog()}
    assert set(OPENROUTER_MODELS) <= set(entries)
    assert entries["qwen/qwen3-coder:free"]["pricing"]["prompt"] == "0"
    assert entries["openrouter/fake-fail-429:free"]["pricing"]["completion"] == "0"
    assert "tools" not in entries["meta-llama/llama-3.3-8b-instruct:free"]["supported_parameters"]
    assert entries["fake/small-context"]["context_length"] == 8192
    assert entries["openrouter/auto"]["pricing"]["prompt"] == "-1"
    assert entries["fake/good"]["pricing"]["prompt"] == "0.000001"  # the fake's usage.cost prices
