"""``[gateway]`` and ``[[gateway.sources]]``: typed, validated, secrets from files or env."""

from __future__ import annotations

import pytest

from engine.config import ConfigError, config_from_mapping, load_config
from engine.people.roster import Person, load_roster
from gateway.roster import Attribution, UnknownUser

PIPEDRIVE = {"name": "pipedrive", "kind": "pipedrive", "username": "kpi", "secret": "pw"}


def gateway(**section):
    return config_from_mapping({"gateway": section}).gateway


def test_defaults_need_no_gateway_section():
    config = config_from_mapping({})
    assert config.gateway.sources == () and config.gateway.port == 8088


def test_a_source_gets_its_path_and_kind_defaults():
    [source] = gateway(sources=[{"name": "hs", "kind": "hubspot", "secret": "x",
                                 "public_url": "https://a.example/hooks/hs"}]).sources
    assert source.path == "/hooks/hs"
    assert (source.won_stages, source.lost_stages) == (("closedwon",), ("closedlost",))


def test_secrets_from_file_and_env_never_in_repr(tmp_path):
    secret_file = tmp_path / "token"
    secret_file.write_text("from-file\n")
    config = config_from_mapping({"gateway": {"sources": [
        {"name": "a", "kind": "contract", "secret_file": str(secret_file)},
        {"name": "b", "kind": "contract", "secret_env": "MY_TOKEN"}]}},
        {"MY_TOKEN": "from-env"})
    assert [s.secret for s in config.gateway.sources] == ["from-file", "from-env"]
    assert "from-file" not in repr(config) and "from-env" not in repr(config)


def test_env_overrides_scalar_gateway_keys(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[gateway]\nport = 9000\n')
    config = load_config(path, {"KPI_GATEWAY_PORT": "9100"})
    assert config.gateway.port == 9100


@pytest.mark.parametrize("section,message", [
    ({"sources": [{"name": "x", "kind": "zoho", "secret": "s"}]}, "'kind' must be one of"),
    ({"sources": [{"name": "x", "kind": "contract"}]}, "needs 'secret'"),
    ({"sources": [{"name": "x", "kind": "pipedrive", "secret": "s"}]}, "needs 'username'"),
    ({"sources": [{"name": "x", "kind": "salesforce"}]}, "needs 'org_id'"),
    ({"sources": [{"name": "x", "kind": "hubspot", "secret": "s"}]}, "needs 'public_url'"),
    ({"sources": [{"name": "x", "kind": "contract", "secret": "s", "secret_env": "Y"}]},
     "give one of"),
    ({"sources": [{"name": "x", "kind": "contract", "secret_env": "UNSET_VAR_X"}]}, "UNSET_VAR_X"),
    ({"sources": [{"name": "x", "kind": "contract", "secret": "s", "colour": 1}]}, "colour"),
    ({"sources": [PIPEDRIVE, PIPEDRIVE]}, "used twice"),
    ({"sources": [{**PIPEDRIVE, "stages": {"1": 5}}]}, "'stages'"),
    ({"unknown_user": "default_team"}, "default_team is required"),
    ({"unknown_user": "ignore"}, "unknown_user"),
    ({"max_body_bytes": 0}, "max_body_bytes"),
    ({"port": "eighty"}, "[gateway] port"),
    ({"listen": 1}, "listen"),
])
def test_errors_name_the_key(section, message):
    with pytest.raises(ConfigError, match=None) as info:
        gateway(**section)
    assert message in str(info.value)


def test_secret_file_missing_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="secret_file"):
        gateway(sources=[{"name": "a", "kind": "contract",
                          "secret_file": str(tmp_path / "nope")}])


# --- the roster -----------------------------------------------------------------------------------

def test_toml_roster_maps_crm_users_and_names_teams(tmp_path):
    path = tmp_path / "roster.toml"
    path.write_text('[teams]\nemea = "EMEA"\n[[people]]\nrep_id = "rep-1"\nteam_id = "emea"\n'
                    'name = "Anna Schmidt"\n'
                    'crm = { pipedrive = 18487521, salesforce = "0055e000001AbCdEAK" }\n')
    roster = load_roster(path)
    anna = Person("rep-1", "emea", "Anna Schmidt")
    assert roster.find("pipedrive", "18487521") == anna
    assert roster.find("salesforce", "0055e000001AbCd") == anna  # the 15-character form
    assert roster.find("hubspot", "18487521") is None  # ids are per source
    assert roster.team_names == {"emea": "EMEA"}


def test_csv_roster(tmp_path):
    path = tmp_path / "roster.csv"
    path.write_text("source,user_id,rep_id,team_id,name,team_name\n"
                    "hubspot,41629779,rep-1,emea,Anna Schmidt,EMEA\n"
                    "pipedrive,7,rep-1,emea,Anna Schmidt,EMEA\n")
    roster = load_roster(path)
    assert roster.find("hubspot", "41629779") == roster.find("pipedrive", "7")
    assert roster.team_names == {"emea": "EMEA"}


@pytest.mark.parametrize("name,text,message", [
    ("r.csv", "user_id,rep_id\n1,r\n", "header must name"),
    ("r.csv", "source,user_id,rep_id,team_id\npd,1,r1,t\npd,1,r2,t\n", "already r1"),
    ("r.toml", "[[people]]\nrep_id = 'r'\n", "team_id"),
    ("r.toml", "people = [", "not valid TOML"),
])
def test_broken_rosters_are_config_errors(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_roster(path)
    assert message in str(info.value)


def test_unknown_user_policy(tmp_path):
    path = tmp_path / "roster.toml"
    path.write_text("")
    roster = load_roster(path)
    with pytest.raises(UnknownUser):
        Attribution(roster).person("pipedrive", 5)
    assert Attribution(roster, "default_team", "pool").person("pipedrive", 5) == Person(
        "pipedrive-5", "pool", "5")
    with pytest.raises(UnknownUser):  # no owner at all is never a default rep
        Attribution(roster, "default_team", "pool").person("pipedrive", None)


def test_stage_mapping_must_name_configured_pipeline_stages():
    stages = {"stages": [{"id": "discovery", "probability": 0.1, "category": "pipeline"}]}
    ok = {**PIPEDRIVE, "stages": {"1": "discovery"}}
    assert config_from_mapping({"pipeline": stages, "gateway": {"sources": [ok]}})
    bad = {**PIPEDRIVE, "stages": {"1": "discovery", "2": "demo"}}
    with pytest.raises(ConfigError, match="'demo', which is not a \\[\\[pipeline.stages\\]\\] id"):
        config_from_mapping({"pipeline": stages, "gateway": {"sources": [bad]}})


def test_gateway_command_without_sources_is_a_usage_error(tmp_path, capsys):
    from engine.cli import main

    path = tmp_path / "c.toml"
    path.write_text("[gateway]\nport = 9000\n")
    assert main(["gateway", "--config", str(path)]) == 2
    assert "no [[gateway.sources]]" in capsys.readouterr().err
    path.write_text("[gateway]\nport = 'x'\n")
    assert main(["gateway", "--config", str(path)]) == 2


# --- one roster for the worker and the gateway: [people] roster ---------------------------------

def test_people_roster_is_the_one_key_and_gateway_roster_its_older_spelling(tmp_path):
    assert config_from_mapping({"people": {"roster": "r.toml"}}).people.roster == "r.toml"
    assert config_from_mapping({"gateway": {"roster": "r.toml"}}).people.roster == "r.toml"
    assert config_from_mapping({"people": {"roster": "r.toml"},
                                "gateway": {"roster": "r.toml"}}).people.roster == "r.toml"
    with pytest.raises(ConfigError, match="different files"):
        config_from_mapping({"people": {"roster": "a.toml"}, "gateway": {"roster": "b.toml"}})
    assert config_from_mapping({}, {"KPI_PEOPLE_ROSTER": "env.csv"}).people.roster == "env.csv"


def test_a_roster_may_name_reps_without_crm_ids_in_toml_and_csv(tmp_path):
    toml = tmp_path / "names.toml"
    toml.write_text('[teams]\ndach = "DACH"\n[[people]]\nrep_id = "rep-001"\nteam_id = "dach"\n'
                    'name = "Anna Schmidt"\n')
    csv = tmp_path / "names.csv"
    csv.write_text("rep_id,team_id,name,team_name\nrep-001,dach,Anna Schmidt,DACH\n")
    for path in (toml, csv):
        roster = load_roster(path)
        assert roster.rep_names() == {"rep-001": "Anna Schmidt"}
        assert roster.team_names == {"dach": "DACH"}
        assert roster.people == {}  # nobody to attribute CRM users to


def test_one_rep_id_cannot_have_two_names(tmp_path):
    path = tmp_path / "twice.toml"
    path.write_text('[[people]]\nrep_id = "rep-001"\nteam_id = "dach"\nname = "Anna"\n'
                    '[[people]]\nrep_id = "rep-001"\nteam_id = "dach"\nname = "Anne"\n')
    with pytest.raises(ConfigError, match="rep-001 is listed twice"):
        load_roster(path)
