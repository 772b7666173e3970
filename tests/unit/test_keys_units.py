from pathlib import Path

import pytest

from cg_keys.catalog import load_catalog
from cg_keys.settings import Settings
from cglib.keysecret import PREFIX, display_prefix, hash_secret, looks_like_key, new_secret


def test_secret_format_and_hash():
    s = new_secret()
    assert s.startswith(PREFIX) and len(s) == len(PREFIX) + 40 and s[len(PREFIX):].isalnum()
    assert looks_like_key(s)
    assert hash_secret(s) == hash_secret(s) and len(hash_secret(s)) == 64
    assert hash_secret(s) != hash_secret(new_secret())
    assert display_prefix(s) == s[:12]


@pytest.mark.parametrize("bad", ["", "sk-cg-short", "sk-xx-" + "a" * 40, "sk-cg-" + "a" * 39 + "!"])
def test_not_keys(bad):
    assert not looks_like_key(bad)


def test_shipped_catalog_loads_with_exact_prices():
    catalog = load_catalog(Settings().catalog_path)
    assert catalog.version
    mini = catalog.get("gpt-4o-mini")
    assert mini is not None and str(mini.input_usd_per_mtok) == "0.15" and str(mini.output_usd_per_mtok) == "0.60"
    assert {m.provider for m in catalog.models.values()} >= {"openai", "anthropic", "google", "mistral"}


def test_catalog_refuses_duplicates_and_bad_prices(tmp_path: Path):
    dup = tmp_path / "dup.yaml"
    entry = ("  - {id: m, provider: p, upstream_model: m, category: budget, input_usd_per_mtok: '%s',"
             " output_usd_per_mtok: '1', context_window: 1, max_output_tokens: 1}\n")
    dup.write_text("version: '1'\nmodels:\n" + entry % "1" + entry % "1")
    with pytest.raises(ValueError, match="duplicate"):
        load_catalog(dup)
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: '1'\nmodels:\n" + entry % "-2")
    with pytest.raises(ValueError, match="non-negative"):
        load_catalog(bad)
