"""Configuration: defaults, the TOML file, environment overrides, and clear start-up errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine.config import ConfigError, config_from_mapping, load_config


def test_defaults_match_the_contract():
    config = load_config(None, environ={})
    assert (config.calendar.timezone, config.calendar.week_start,
            config.calendar.fiscal_year_start_month) == ("UTC", "monday", 1)
    assert (config.money.currency, config.money.gross_margin) == ("USD", 1.0)
    assert (config.limits.max_event_bytes, config.limits.max_future_skew_seconds,
            config.limits.retention_days) == (1_048_576, 300, 800)
    assert (config.topics.input, config.topics.dead_letter) == ("crm.events", "crm.events.dlq")


def test_file_then_environment_overrides(tmp_path: Path):
    path = tmp_path / "engine.toml"
    path.write_text('[calendar]\ntimezone = "Europe/Berlin"\n[kafka]\n'
                    'bootstrap_servers = "a:9092"\n[worker]\nweb_port = 7000\n')
    config = load_config(path, environ={"KPI_KAFKA_BOOTSTRAP_SERVERS": "b:9092",
                                        "KPI_WORKER_WEB_PORT": "7100"})
    assert config.calendar.timezone == "Europe/Berlin"
    assert config.kafka.bootstrap_servers == "b:9092"
    assert config.worker.web_port == 7100


def test_config_file_from_the_environment_variable(tmp_path: Path):
    path = tmp_path / "engine.toml"
    path.write_text('[money]\ncurrency = "GBP"\n')
    assert load_config(None, environ={"KPI_ENGINE_CONFIG": str(path)}).money.currency == "GBP"


@pytest.mark.parametrize("raw, words", [
    ({"calendar": {"timezone": "Mars/Olympus"}}, "IANA"),
    ({"calendar": {"week_start": "friday"}}, "week_start"),
    ({"calendar": {"fiscal_year_start_month": 13}}, "fiscal_year_start_month"),
    ({"calendar": {"tz": "UTC"}}, "unknown key"),
    ({"money": {"gross_margin": 0}}, "gross_margin"),
    ({"money": {"gross_margin": "high"}}, "must be a number"),
    ({"limits": {"retention_days": 365}}, "retention_days"),
    ({"limits": {"max_event_bytes": True}}, "integer"),
    ({"kafka": {"security_protocol": "SASL_SSL"}}, "sasl_mechanism"),
    ({"kafka": {"security_protocol": "TLS"}}, "security_protocol"),
    ({"topics": {"partitions": 0}}, "partitions"),
    ({"worker": {"web_port": 70000}}, "web_port"),
    ({"calendr": {}}, "unknown config section"),
    ({"targets": [{"kpi": "revenue_won", "period": "month"}]}, "missing 'value'"),
    ({"targets": [{"kpi": "revenue", "period": "month", "value": 1}]}, "unknown"),
    ({"targets": [{"kpi": "revenue_won", "period": "fortnight", "value": 1}]}, "period"),
    ({"targets": [{"kpi": "revenue_won", "period": "month", "value": 1, "team": "a",
                   "rep": "b"}]}, "not both"),
    ({"targets": [{"kpi": "cac", "period": "month", "value": 1, "team": "a"}]},
     "company-only"),
    ({"targets": [{"kpi": "active_reps", "period": "month", "value": 1, "rep": "b"}]},
     "not a rep KPI"),
    ({"targets": [{"kpi": "activities_by_type", "period": "day", "value": 1}]}, "non-numeric"),
])
def test_bad_configuration_names_the_problem(raw, words):
    with pytest.raises(ConfigError, match=words):
        config_from_mapping(raw)


def test_bad_environment_override_is_an_error():
    with pytest.raises(ConfigError, match=r"\[worker\] web_port must be an integer"):
        config_from_mapping({}, {"KPI_WORKER_WEB_PORT": "sixty"})


def test_invalid_toml_and_missing_file_are_clear(tmp_path: Path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[calendar\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad, environ={})
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml", environ={})


def test_commands_exit_2_with_the_message_on_a_bad_config(tmp_path: Path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[money]\ngross_margin = 2\n')
    events = tmp_path / "e.jsonl"
    events.write_text("")
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "validate", str(events),
                           "--config", str(bad)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "gross_margin" in proc.stderr and "Traceback" not in proc.stderr
