"""Configuration: defaults, the TOML file, environment overrides, and clear start-up errors."""

from __future__ import annotations

import re
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
    ({"worker": {"answers": "thread"}}, r"\[worker\] answers must be one of fork, loop"),
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


# --- [[pipeline.stages]] (SPEC §7.1) -------------------------------------------------------------

def _stages(*stages: dict) -> dict:
    return {"pipeline": {"stages": list(stages)}}


def test_pipeline_stages_in_order():
    config = config_from_mapping(_stages(
        {"id": "discovery", "probability": 0.1, "category": "pipeline"},
        {"id": "verbal", "probability": 1, "category": "commit"}))
    assert [(s.id, s.probability, s.category) for s in config.pipeline.stages] == [
        ("discovery", 0.1, "pipeline"), ("verbal", 1.0, "commit")]
    assert config.pipeline.stage_ids == {"discovery", "verbal"}
    assert config_from_mapping({}).pipeline.stages == ()


@pytest.mark.parametrize("stages, message", [
    ([{"probability": 0.1, "category": "pipeline"}], "missing 'id'"),
    ([{"id": "a", "category": "pipeline"}], "missing 'probability'"),
    ([{"id": "a", "probability": 0.1}], "missing 'category'"),
    ([{"id": "a", "probability": 0.1, "category": "pipeline"},
      {"id": "a", "probability": 0.2, "category": "commit"}], "duplicate stage id 'a'"),
    ([{"id": "a", "probability": 1.5, "category": "pipeline"}], "'probability'"),
    ([{"id": "a", "probability": -0.1, "category": "pipeline"}], "'probability'"),
    ([{"id": "a", "probability": True, "category": "pipeline"}], "'probability'"),
    ([{"id": "a", "probability": "0.1", "category": "pipeline"}], "'probability'"),
    ([{"id": "a", "probability": 0.1, "category": "forecast"}], "'category'"),
    ([{"id": "", "probability": 0.1, "category": "pipeline"}], "'id'"),
    ([{"id": "a\nb", "probability": 0.1, "category": "pipeline"}], "'id'"),
    ([{"id": "a", "probability": 0.1, "category": "pipeline", "colour": "red"}],
     "unknown key(s) colour"),
    ([{"id": f"s{i}", "probability": 0.1, "category": "pipeline"} for i in range(51)],
     "at most 50 stages"),
])
def test_pipeline_stage_errors_name_the_key(stages, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as raised:
        config_from_mapping(_stages(*stages))
    assert "pipeline.stages" in str(raised.value)


def test_unknown_pipeline_key_is_an_error():
    with pytest.raises(ConfigError, match="unknown key"):
        config_from_mapping({"pipeline": {"stage": []}})


@pytest.mark.parametrize("kpi, scope", [
    ("pipeline_weighted", {}), ("forecast_weighted", {"team": "t"}),
    ("pipeline_deals", {"rep": "r"}), ("pipeline_due_amount", {"rep": "r"})])
def test_pipeline_scalars_take_targets_in_every_scope(kpi, scope):
    config = config_from_mapping({"targets": [{"kpi": kpi, "period": "month", "value": 1,
                                               **scope}]})
    assert config.targets[0].kpi == kpi


@pytest.mark.parametrize("kpi", ["pipeline_amount_by_stage", "stage_entries",
                                 "avg_days_in_stage", "pipeline_amount_by_category"])
def test_a_pipeline_breakdown_takes_no_target(kpi):
    with pytest.raises(ConfigError, match="non-numeric"):
        config_from_mapping({"targets": [{"kpi": kpi, "period": "month", "value": 1}]})
