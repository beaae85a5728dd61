"""docker-compose.yml and what it mounts, checked offline: the tests never need Docker.

The compose file is validated against the Compose Specification schema that
``check-jsonschema`` ships (``--builtin-schema vendor.compose-spec``, no network); every host
path it mounts must exist; the engine's services may only set configuration variables the
engine knows, and their configuration must load; Prometheus' configuration is checked by
``promtool`` in a directory laid out as the container sees it; the image's entrypoint is the
project's console script.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import sys
import tomllib
import typing
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from ruamel.yaml import YAML

from engine.config import CONFIG_ENV, ENV_PREFIX, Config, load_config

ROOT = Path(__file__).parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
PROMTOOL = shutil.which("promtool")
ENGINE_IMAGE = "kpi-engine:local"

needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (apt-get install prometheus)")


def _compose() -> dict[str, Any]:
    return YAML(typ="safe", pure=True).load(COMPOSE.read_text(encoding="utf-8"))


SERVICES: dict[str, dict[str, Any]] = _compose()["services"]
ENGINE_SERVICES = sorted(name for name, s in SERVICES.items() if s.get("image") == ENGINE_IMAGE
                         and "alert_log" not in json.dumps(s.get("entrypoint", "")))
WORKERS = sorted(name for name in ENGINE_SERVICES if SERVICES[name].get("command", [None])[0]
                 == "worker")
GATEWAYS = sorted(name for name in ENGINE_SERVICES if SERVICES[name].get("command", [None])[0]
                  == "gateway")


def _bind_mounts(service: dict[str, Any]) -> list[tuple[Path, PurePosixPath]]:
    """(host path, container path) of the service's bind mounts (short syntax)."""
    mounts = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            mounts.append(((ROOT / source).resolve(), PurePosixPath(target)))
    return mounts


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def _known_config_variables() -> set[str]:
    """``KPI_ENGINE_CONFIG`` and ``KPI_<SECTION>_<KEY>`` for every scalar key of engine/config.py."""
    known = {CONFIG_ENV}
    for section, cls in typing.get_type_hints(Config).items():
        if dataclasses.is_dataclass(cls):
            known |= {f"{ENV_PREFIX}{section}_{f.name}".upper() for f in dataclasses.fields(cls)}
    return known


def _host_path(service: dict[str, Any], container_path: str) -> Path:
    """The host file a container path of ``service`` comes from, through its bind mounts."""
    path = PurePosixPath(container_path)
    for host, target in _bind_mounts(service):
        if path == target or target in path.parents:
            return host / path.relative_to(target)
    raise AssertionError(f"{container_path} is not mounted from the repository")


def _service_config(name: str, tmp_path: Path) -> Config:
    """The configuration ``name`` runs with: its file through its mounts, its environment, and
    the secrets it is given (``/run/secrets/<name>``, files read when the config loads) as test
    files in ``tmp_path``."""
    service = SERVICES[name]
    env = _environment(service)
    secrets = tmp_path / "run" / "secrets"
    secrets.mkdir(parents=True, exist_ok=True)
    for secret in service.get("secrets", []):
        target = secret["target"] if isinstance(secret, dict) else secret
        (secrets / target).write_text(f"test-{target}\n")
    text = _host_path(service, env[CONFIG_ENV]).read_text(encoding="utf-8")
    config_file = tmp_path / f"{name}.toml"
    config_file.write_text(text.replace("/run/secrets/", f"{secrets}/"), encoding="utf-8")
    return load_config(config_file, environ=env)


def test_compose_file_follows_the_compose_specification():
    proc = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
         str(COMPOSE)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_stack_has_its_services():
    assert {"kafka", "prometheus", "alertmanager", "grafana", "generator", "backfill",
            "gateway"} <= set(SERVICES)
    assert len(WORKERS) == 2 and GATEWAYS == ["gateway"]


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_mounted_host_path_exists_in_the_repository(name: str):
    for host, _ in _bind_mounts(SERVICES[name]):
        assert host.is_relative_to(ROOT), f"{host} is outside the repository"
        assert host.exists(), f"{name} mounts {host.relative_to(ROOT)}, which does not exist"
    build = SERVICES[name].get("build")
    if build:
        assert (ROOT / build["context"] / build["dockerfile"]).is_file()


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_image_is_pinned(name: str):
    image = SERVICES[name]["image"]
    repository, _, tag = image.rpartition(":")
    assert repository and tag and tag != "latest", f"{name}: pin a tag, not {image!r}"
    assert "build" in SERVICES[name] or re.fullmatch(r"v?\d+(\.\d+)+", tag), image


@pytest.mark.parametrize("name", ENGINE_SERVICES)
def test_engine_services_set_only_known_config_variables_and_their_config_loads(
        name: str, tmp_path: Path):
    service, known = SERVICES[name], _known_config_variables()
    env = _environment(service)
    unknown = sorted(set(env) - known)
    assert not unknown, f"{name}: not engine configuration keys (engine/config.py): {unknown}"
    config = _service_config(name, tmp_path)
    assert config.kafka.bootstrap_servers == "kafka:9092"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_no_other_service_sets_engine_variables(name: str):
    if name in ENGINE_SERVICES:
        return
    assert not [key for key in _environment(SERVICES[name]) if key.startswith(ENV_PREFIX)]


def test_workers_listen_on_all_interfaces_on_their_own_port_and_keep_their_own_state():
    ports, volumes = set(), set()
    for name in WORKERS:
        service = SERVICES[name]
        env = _environment(service)
        config = load_config(_host_path(service, env[CONFIG_ENV]), environ=env)
        port = config.worker.web_port
        assert config.worker.web_host == "0.0.0.0"
        assert f"127.0.0.1:{port}:{port}" in service["ports"]
        assert f"127.0.0.1:{port}/ready" in json.dumps(service["healthcheck"]["test"])
        named = {source: PurePosixPath(target) for source, target in
                 (volume.split(":")[:2] for volume in service["volumes"])
                 if not source.startswith((".", "/"))}
        state = [source for source, target in named.items()
                 if PurePosixPath(config.worker.data_dir).is_relative_to(target)]
        assert len(state) == 1, f"{name}: [worker] data_dir is not on a named volume"
        ports.add(port)
        volumes.add(state[0])
    assert len(ports) == len(volumes) == len(WORKERS)


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_dependencies_wait_for_health_or_completion(name: str):
    for dependency, how in SERVICES[name].get("depends_on", {}).items():
        condition = how["condition"]
        assert condition in ("service_healthy", "service_completed_successfully")
        if condition == "service_healthy":
            assert "healthcheck" in SERVICES[dependency], f"{dependency} has no healthcheck"
        else:
            assert SERVICES[dependency].get("restart") == "no"


def test_long_running_services_have_healthchecks():
    one_shot = {name for name, s in SERVICES.items() if s.get("restart") == "no"}
    missing = [name for name in SERVICES if name not in one_shot | {"generator"}
               and "healthcheck" not in SERVICES[name]]
    assert not missing


def test_grafana_has_no_anonymous_access_no_default_password_and_a_folder_per_audience():
    grafana = SERVICES["grafana"]
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    env = _environment(grafana)
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert env["GF_USERS_ALLOW_SIGN_UP"] == "false"
    # required from the environment: compose refuses to start without it
    assert env["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")
    providers = YAML(typ="safe", pure=True).load(
        (ROOT / "grafana/provisioning/dashboards/kpi.yml").read_text())["providers"]
    folders = {p["folder"]: PurePosixPath(p["options"]["path"]) for p in providers}
    assert set(folders) == {"Executive", "Managers", "Reps", "TV"}
    mounted = {target.parent: host for host, target in _bind_mounts(grafana)
               if target.suffix == ".json"}
    assert set(mounted) == set(folders.values())  # every folder gets its dashboards
    dashboards = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
    assert sorted(mounted.values()) == dashboards  # and every dashboard one folder
    assert mounted[folders["TV"]].name == "wallboard.json"
    assert mounted[folders["Executive"]].name == "executive.json"


def _flag(service: dict[str, Any], name: str) -> str:
    for arg in service["command"]:
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
    raise AssertionError(f"--{name} is not set")


@needs_promtool
def test_prometheus_config_is_valid_as_the_container_sees_it(tmp_path: Path):
    prometheus = SERVICES["prometheus"]
    for host, target in _bind_mounts(prometheus):
        destination = tmp_path / target.relative_to("/")
        if host.is_dir():
            shutil.copytree(host, destination)
        else:
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(host, destination)
    config = tmp_path / PurePosixPath(_flag(prometheus, "config.file")).relative_to("/")
    # the secrets it reads, where the container has them (/run/secrets/<target>)
    secrets = tmp_path / "run" / "secrets"
    secrets.mkdir(parents=True)
    for secret in prometheus.get("secrets", []):
        target = secret["target"] if isinstance(secret, dict) else secret
        (secrets / target).write_text("kpi_test-token\n")
    config.write_text(config.read_text().replace("/run/secrets/", f"{secrets}/"))
    proc = subprocess.run([PROMTOOL, "check", "config", str(config)], capture_output=True,
                          text=True, timeout=120)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    checked = set(re.findall(r"Checking (\S+)\n\s+SUCCESS", output))
    expected = {str(tmp_path / "etc/prometheus" / p.relative_to(ROOT / "prometheus"))
                for p in [*(ROOT / "prometheus" / "rules").glob("*.yml"),
                          *(ROOT / "prometheus" / "alerts").glob("*.yml")]}
    assert expected and expected <= checked, output


def test_prometheus_scrapes_every_worker_as_job_kpi_engine_and_alerts_alertmanager():
    config = YAML(typ="safe", pure=True).load(
        (ROOT / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = {t for sc in jobs["kpi-engine"]["static_configs"] for t in sc["targets"]}
    expected = set()
    for name in WORKERS:
        env = _environment(SERVICES[name])
        expected.add(f"{name}:{env['KPI_WORKER_WEB_PORT']}")
    assert targets == expected
    assert {"rules/*.yml", "alerts/*.yml"} <= set(config["rule_files"])
    alertmanagers = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert alertmanagers == ["alertmanager:9093"]
    assert _host_path(SERVICES["alertmanager"], _flag(SERVICES["alertmanager"], "config.file")) \
        == ROOT / "alertmanager" / "alertmanager.yml"


def test_dockerfile_builds_the_package_on_python_3_11_slim_with_the_console_script_entrypoint():
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim\b", text, flags=re.M)
    # installed, then the compiled build of the hot path, made where the package is installed
    assert re.search(r"pip install '\.\[native\]' \\\n \&\& kpi-engine native build", text)
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (.+)$", text, flags=re.M).group(1))
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert entrypoint[0] in scripts and len(entrypoint) == 1
    for name in ENGINE_SERVICES:
        service = SERVICES[name]
        assert service["build"]["dockerfile"] == "docker/Dockerfile"
        command = service.get("command", [])
        if "entrypoint" not in service:
            assert command[0] in ("worker", "generate", "gateway")
        else:
            assert "kpi-engine " in " ".join(command)


# -- locked down (issue 12, docs/security.md) ---------------------------------------------------

def _published(service: dict[str, Any]) -> list[str]:
    return [str(p) for p in service.get("ports", [])]


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_no_port_is_published_beyond_loopback(name: str):
    for port in _published(SERVICES[name]):
        assert port.startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


def _kafka_properties() -> dict[str, str]:
    text = (ROOT / "docker" / "kafka" / "start.sh").read_text()
    block = re.search(r'cat > "\$CONF" <<PROPERTIES\n(.*?)\nPROPERTIES', text, re.S).group(1)
    return dict(line.split("=", 1) for line in block.splitlines()
                if line.strip() and not line.startswith("#"))


def test_kafka_requires_sasl_on_every_client_listener_and_enforces_acls():
    kafka = SERVICES["kafka"]
    assert _host_path(kafka, kafka["entrypoint"][-1]) == ROOT / "docker/kafka/start.sh"
    props = _kafka_properties()
    protocols = dict(item.split(":") for item in
                     props["listener.security.protocol.map"].split(","))
    listeners = dict(re.match(r"(\w+)://(.*)", item).groups()
                     for item in props["listeners"].split(","))
    controller = props["controller.listener.names"]
    for listener, protocol in protocols.items():
        if listener == controller:
            assert listeners[listener].startswith("localhost:"), "controller must stay inside"
        else:
            assert protocol.startswith("SASL_"), f"{listener} is {protocol}"
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert props["authorizer.class.name"].endswith("StandardAuthorizer")
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert "kafka_admin_password" in kafka["secrets"]
    assert not [k for k in _environment(kafka) if "PASSWORD" in k]


@pytest.mark.parametrize("name", ENGINE_SERVICES)
def test_engine_services_use_sasl_with_their_own_principal_and_a_password_file(
        name: str, tmp_path: Path):
    service = SERVICES[name]
    config = _service_config(name, tmp_path)
    kafka = config.kafka
    assert (kafka.security_protocol, kafka.sasl_mechanism) == ("SASL_PLAINTEXT", "SCRAM-SHA-512")
    assert kafka.sasl_password is None
    secret = PurePosixPath(kafka.sasl_password_file)
    assert secret.parent == PurePosixPath("/run/secrets") and secret.name in service["secrets"]
    expected = "worker" if name in WORKERS else "gateway" if name in GATEWAYS else "producer"
    assert kafka.sasl_username == expected
    assert service["depends_on"]["kafka-acls"]["condition"] == "service_completed_successfully"


def _acl_script_grants() -> set[tuple[str, str, str, str, str]]:
    """(principal, resource type, pattern, name, operation) granted by docker/kafka/acls.sh."""
    text = (ROOT / "docker" / "kafka" / "acls.sh").read_text().replace("\\\n", " ")
    defaults = dict(re.findall(r'\$\{(\w+):=([^}]+)\}', text))
    grants = set()
    for line in text.splitlines():
        if not line.startswith("acl --"):
            continue
        words = [defaults.get(w.strip('"${}'), w) for w in line.split()[1:]]
        options: dict[str, list[str]] = {}
        for flag, value in zip(words, [*words[1:], ""]):
            if flag.startswith("--"):
                options.setdefault(flag[2:], []).append(value)
        pattern = options.get("resource-pattern-type", ["literal"])[0].upper()
        resources = [("TOPIC", t) for t in options.get("topic", [])] + \
                    [("GROUP", g) for g in options.get("group", [])]
        if "cluster" in options:
            resources.append(("CLUSTER", "kafka-cluster"))
        principal = options["allow-principal"][0].removeprefix("User:")
        for kind, resource in resources:
            for operation in options["operation"]:
                op = re.sub(r"(?<!^)(?=[A-Z])", "_", operation).upper()
                grants.add((principal, kind, pattern, resource, op))
    return grants


def test_the_compose_acls_are_those_the_secure_test_broker_runs_with(tmp_path: Path):
    from engine.kafka_secure import gateway_acls, producer_acls, worker_acls

    service = SERVICES["worker-1"]
    env = _environment(service)
    config = load_config(_host_path(service, env[CONFIG_ENV]), environ=env)
    gateway = _service_config("gateway", tmp_path)
    expected = {(acl.principal, acl.resource_type, acl.pattern, acl.name, op)
                for acl in [*worker_acls("worker", config), *producer_acls("producer", config),
                            *gateway_acls("gateway", gateway)]
                for op in acl.operations}
    assert _acl_script_grants() == expected


def test_workers_require_tokens_from_a_secret_and_would_refuse_to_start_without():
    from engine.config import ConfigError

    for name in WORKERS:
        service = SERVICES[name]
        env = _environment(service)
        config = load_config(_host_path(service, env[CONFIG_ENV]), environ=env)
        assert config.auth.enabled
        assert PurePosixPath(config.auth.tokens_file).name in service["secrets"]
        without = {k: v for k, v in env.items() if not k.startswith("KPI_AUTH_")}
        with pytest.raises(ConfigError, match="beyond this machine"):
            load_config(_host_path(service, env[CONFIG_ENV]), environ=without)


def test_prometheus_has_no_lifecycle_api_a_cors_origin_and_scrapes_with_a_token():
    prometheus = SERVICES["prometheus"]
    assert "--web.enable-lifecycle" not in prometheus["command"]
    origin = re.compile(_flag(prometheus, "web.cors.origin"))
    for name in WORKERS:
        port = _environment(SERVICES[name])["KPI_WORKER_WEB_PORT"]
        assert origin.fullmatch(f"http://localhost:{port}")
    assert not origin.fullmatch("http://evil.example:6066")
    config = YAML(typ="safe", pure=True).load(
        (ROOT / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "kpi-engine")
    credentials = PurePosixPath(job["authorization"]["credentials_file"])
    targets = {s["target"] if isinstance(s, dict) else s for s in prometheus["secrets"]}
    assert credentials.parent == PurePosixPath("/run/secrets") and credentials.name in targets


def test_every_secret_comes_from_the_environment_and_is_used():
    secrets = _compose()["secrets"]
    assert all(set(spec) == {"environment"} for spec in secrets.values())
    used = {s["source"] if isinstance(s, dict) else s
            for service in SERVICES.values() for s in service.get("secrets", [])}
    assert used == set(secrets)


# -- the CRM gateway and the roster (issue 10) --------------------------------------------------

def test_the_gateway_listens_in_its_container_publishes_on_loopback_and_is_scraped(tmp_path):
    service = SERVICES["gateway"]
    config = _service_config("gateway", tmp_path)
    port = config.gateway.port
    assert config.gateway.host == "0.0.0.0"
    assert _published(service) == [f"127.0.0.1:{port}:{port}"]
    assert f"127.0.0.1:{port}/ready" in json.dumps(service["healthcheck"]["test"])
    prometheus = YAML(typ="safe", pure=True).load(
        (ROOT / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
    job = next(j for j in prometheus["scrape_configs"] if j["job_name"] == "kpi-gateway")
    assert job["static_configs"][0]["targets"] == [f"gateway:{port}"]


def test_every_gateway_source_authenticates_with_a_mounted_secret(tmp_path):
    service = SERVICES["gateway"]
    config = _service_config("gateway", tmp_path)
    assert config.gateway.sources
    raw = tomllib.loads(_host_path(service, _environment(service)[CONFIG_ENV]).read_text())
    for source, entry in zip(config.gateway.sources, raw["gateway"]["sources"], strict=True):
        assert source.secret == f"test-{PurePosixPath(entry['secret_file']).name}", source.name
        assert PurePosixPath(entry["secret_file"]).parent == PurePosixPath("/run/secrets")
        assert "secret" not in entry and "secret_env" not in entry  # never in the file


def test_workers_and_gateway_share_the_calendar_money_topics_and_roster(tmp_path):
    gateway = _service_config("gateway", tmp_path)
    for name in WORKERS:
        worker = _service_config(name, tmp_path)
        assert (worker.calendar, worker.money.currency, worker.topics) == \
            (gateway.calendar, gateway.money.currency, gateway.topics), name
        assert worker.people.roster == gateway.people.roster is not None
    rosters = {_host_path(SERVICES[name], gateway.people.roster) for name in [*WORKERS, "gateway"]}
    assert rosters == {ROOT / "docker" / "roster.toml"}


def test_the_stack_roster_names_every_rep_and_team_the_generator_sends():
    from engine.people.roster import load_roster
    from engine.tooling.generator import GeneratorSettings, team_names

    roster = load_roster(ROOT / "docker" / "roster.toml")
    settings = GeneratorSettings()  # the stack's generator runs with the defaults
    assert set(roster.team_names) == set(team_names(settings.teams))
    assert set(roster.rep_names()) == {f"rep-{i:03d}" for i in
                                       range(1, settings.teams * settings.reps_per_team + 1)}
    assert all(name != rep for rep, name in roster.rep_names().items())
    from engine.tooling.people import roster_toml

    text = (ROOT / "docker" / "roster.toml").read_text(encoding="utf-8")
    assert text.endswith(roster_toml(settings.teams, settings.reps_per_team, "pipedrive"))
