"""Settings from the environment: API keys -> tenants, the model provider, REDIS_URL.

Every test runs with the Settings variables removed from the environment and in an empty cwd
(Settings also reads `./.env`), so only what a test sets counts.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import ValidationError

from parley.shared.settings import DEFAULT_TENANT, Settings
from parley.shared.store import keys

MakeSettings = Callable[..., Settings]


# --- PARLEY_API_KEYS ------------------------------------------------------------------------


def test_no_keys_means_no_tenants(make_settings: MakeSettings) -> None:
    assert make_settings().keys_to_tenants() == {}


def test_tenant_colon_key(make_settings: MakeSettings) -> None:
    settings = make_settings(PARLEY_API_KEYS="alice:key-a,bob:key-b")
    assert settings.keys_to_tenants() == {"key-a": "alice", "key-b": "bob"}


def test_bare_key_belongs_to_default_tenant(make_settings: MakeSettings) -> None:
    assert DEFAULT_TENANT == "default"
    assert make_settings(PARLEY_API_KEYS="lonely-key").keys_to_tenants() == {"lonely-key": "default"}


def test_mixed_entries_spaces_and_empty_entries(make_settings: MakeSettings) -> None:
    settings = make_settings(PARLEY_API_KEYS=" alice:k1 , ,k2,, bob:k3 ")
    assert settings.keys_to_tenants() == {"k1": "alice", "k2": "default", "k3": "bob"}


def test_only_the_first_colon_separates_tenant_and_key(make_settings: MakeSettings) -> None:
    # So a tenant name never holds `:`, which keeps every Redis key unambiguous.
    assert make_settings(PARLEY_API_KEYS="alice:k:with:colons").keys_to_tenants() == {"k:with:colons": "alice"}


@pytest.mark.parametrize("entry", [":key-without-tenant", "tenant-without-key:", ":", "ok:k1,:bad"])
def test_malformed_entries_raise_at_start(make_settings: MakeSettings, entry: str) -> None:
    with pytest.raises(ValidationError, match="PARLEY_API_KEYS"):
        make_settings(PARLEY_API_KEYS=entry)


def test_reserved_file_scope_is_not_a_tenant(make_settings: MakeSettings) -> None:
    """File agents live under the reserved tenant `_file` (keys.FILE_SCOPE). A key mapped to a
    tenant of that name would see and change the file agents as its own, and share their
    index with every tenant, so such an entry must be refused like a malformed one."""
    with pytest.raises(ValidationError):
        make_settings(PARLEY_API_KEYS=f"{keys.FILE_SCOPE}:some-key")


# --- provider -------------------------------------------------------------------------------


def test_demo_without_any_openai_variable(make_settings: MakeSettings) -> None:
    assert make_settings().provider == "demo"


def test_openai_when_api_key_set(make_settings: MakeSettings) -> None:
    assert make_settings(OPENAI_API_KEY="sk-test").provider == "openai"


def test_openai_when_base_url_set(make_settings: MakeSettings) -> None:
    assert make_settings(OPENAI_BASE_URL="http://127.0.0.1:9/v1").provider == "openai"


def test_empty_openai_variables_count_as_unset(make_settings: MakeSettings) -> None:
    assert make_settings(OPENAI_API_KEY="", OPENAI_BASE_URL="").provider == "demo"


def test_parley_llm_demo_wins_over_openai_variables(make_settings: MakeSettings) -> None:
    assert make_settings(PARLEY_LLM="demo", OPENAI_API_KEY="sk-test").provider == "demo"


def test_parley_llm_openai_without_variables(make_settings: MakeSettings) -> None:
    assert make_settings(PARLEY_LLM="openai").provider == "openai"


def test_unknown_parley_llm_is_refused(make_settings: MakeSettings) -> None:
    with pytest.raises(ValidationError):
        make_settings(PARLEY_LLM="anthropic")


# --- REDIS_URL ------------------------------------------------------------------------------


def test_default_redis_url(make_settings: MakeSettings) -> None:
    assert make_settings().redis_url == "redis://localhost:6379/0"
    assert make_settings(REDIS_URL="").redis_url == "redis://localhost:6379/0"  # empty counts as unset


@pytest.mark.parametrize("url", ["redis://h:6379/1", "rediss://user:pw@h:6380/0", "unix:///run/redis.sock"])
def test_accepted_redis_schemes(make_settings: MakeSettings, url: str) -> None:
    assert make_settings(REDIS_URL=url).redis_url == url


@pytest.mark.parametrize("url", ["http://h:6379", "localhost:6379", "valkey://h:6379"])
def test_other_redis_schemes_are_refused(make_settings: MakeSettings, url: str) -> None:
    with pytest.raises(ValidationError, match="REDIS_URL"):
        make_settings(REDIS_URL=url)


# --- .env file and other knobs --------------------------------------------------------------


def test_dotenv_in_cwd_is_read_and_environment_wins(make_settings: MakeSettings, clean_env: Path) -> None:
    (clean_env / ".env").write_text("PARLEY_API_KEYS=dot:env-key\nPARLEY_LLM=openai\n", encoding="utf-8")
    assert make_settings().keys_to_tenants() == {"env-key": "dot"}
    settings = make_settings(PARLEY_LLM="demo")
    assert settings.provider == "demo"


def test_malformed_key_in_dotenv_raises(make_settings: MakeSettings, clean_env: Path) -> None:
    (clean_env / ".env").write_text("PARLEY_API_KEYS=nokey:\n", encoding="utf-8")
    with pytest.raises(ValidationError):
        make_settings()


def test_tuning_knob_bounds(make_settings: MakeSettings) -> None:
    assert make_settings(PARLEY_MAX_QUEUE_DEPTH="1").max_queue_depth == 1
    with pytest.raises(ValidationError):
        make_settings(PARLEY_MAX_QUEUE_DEPTH="0")
