"""Engine configuration: one TOML file, overridable by environment variables.

Why one typed object: the same settings drive the file report, the live worker and the
exporters, and a misspelt key or an impossible value must stop the engine at start-up with a
message naming the key, never half-way through a stream.

Sources, later wins: built-in defaults, the TOML file (``--config`` or ``KPI_ENGINE_CONFIG``),
then ``KPI_<SECTION>_<KEY>`` environment variables for scalar keys (e.g.
``KPI_KAFKA_BOOTSTRAP_SERVERS=broker:9092``, ``KPI_CALENDAR_TIMEZONE=Europe/Berlin``).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from engine.catalog import REP_TARGETABLE, TARGETABLE_KPIS, TEAM_TARGETABLE

CONFIG_ENV = "KPI_ENGINE_CONFIG"
ENV_PREFIX = "KPI_"

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
PERIODS = ("day", "week", "month", "quarter", "year")


class ConfigError(ValueError):
    """A configuration that the engine refuses to start with; the message names the key."""


@dataclass(frozen=True, slots=True)
class CalendarConfig:
    timezone: str = "UTC"
    week_start: str = "monday"
    fiscal_year_start_month: int = 1

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def week_start_weekday(self) -> int:
        """0 = Monday … 6 = Sunday, as ``date.weekday()`` counts."""
        return WEEKDAYS.index(self.week_start)


@dataclass(frozen=True, slots=True)
class MoneyConfig:
    currency: str = "USD"
    gross_margin: float = 1.0


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_event_bytes: int = 1_048_576
    max_future_skew_seconds: int = 300
    retention_days: int = 800


@dataclass(frozen=True, slots=True)
class Target:
    kpi: str
    period: str
    value: float
    team: str | None = None
    rep: str | None = None


FORECAST_CATEGORIES = ("pipeline", "best_case", "commit")
MAX_STAGES = 50


@dataclass(frozen=True, slots=True)
class Stage:
    """One pipeline stage (SPEC §7.1): its chance to win and its forecast category."""

    id: str
    probability: float
    category: str


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    """The configured stages, in pipeline order; none means stages are ignored (v1 streams)."""

    stages: tuple[Stage, ...] = ()

    @property
    def stage_ids(self) -> frozenset[str]:
        return frozenset(s.id for s in self.stages)


@dataclass(frozen=True, slots=True)
class KafkaConfig:
    bootstrap_servers: str = "localhost:9092"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)  # never in logs or reprs
    sasl_password_file: str | None = None  # the password in a file (Docker/Kubernetes secrets)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    client_id: str = "kpi-engine"


@dataclass(frozen=True, slots=True)
class TopicsConfig:
    input: str = "crm.events"
    dead_letter: str = "crm.events.dlq"
    partitions: int = 4
    #: Of every topic the worker creates (input, dead letters, bundles, ledger changelog,
    #: Faust's own): 1 for a single development broker, 3 in production.
    replication_factor: int = 1
    #: Replicas that must have a write before it is acknowledged (producers use acks=all).
    min_insync_replicas: int = 1


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    app_id: str = "kpi-engine"
    data_dir: str = ".kpi-engine/worker"
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    store: str = "rocksdb://"
    #: Static group membership (streams/membership.py): this worker's stable name in its
    #: consumer groups, so that a restart takes its partitions back at once. "" derives one
    #: from the host name and web port; "none" turns static membership off.
    instance_id: str = ""
    #: Faust standby copies of each partition's ledger on other workers; each worker also
    #: answers for its standby partitions (streams/replicas.py): workers − 1 lets every
    #: worker answer for the whole company.
    standby_replicas: int = 1
    #: Where answers (/api/kpis, /api/live, /metrics) are computed (streams/answers.py):
    #: "fork", a forked child on a snapshot of the state, the event loop free meanwhile
    #: (POSIX); "loop", on the event loop, which must then stop applying for each.
    answers: str = "fork"


#: Values of ``[worker] answers``.
ANSWER_MODES = ("fork", "loop")


# -- access control and TLS of the web endpoints (issue 12) ---------------------------------

#: What a rep token shows of other reps: nothing, or their counts without any money.
REP_LEADERBOARD_POLICIES = ("none", "counts")


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """``[auth]``: the bearer tokens of the web endpoints (see :mod:`engine.security.tokens`).

    ``tokens`` are token lines (hashes, never tokens; ``KPI_AUTH_TOKENS`` takes them separated
    by newlines or ``;``); ``tokens_file`` holds more, one a line, and is re-read when it
    changes, so a revoked kiosk link stops working without a restart. With neither, the
    endpoints are open, which the engine allows on loopback only.
    """

    tokens: tuple[str, ...] = ()
    tokens_file: str | None = None
    rep_leaderboard: str = "none"

    @property
    def enabled(self) -> bool:
        return bool(self.tokens) or self.tokens_file is not None


@dataclass(frozen=True, slots=True)
class WebTlsConfig:
    """``[web_tls]``: serve the web endpoints over HTTPS with this certificate chain and key."""

    certfile: str | None = None
    keyfile: str | None = None

    @property
    def enabled(self) -> bool:
        return self.certfile is not None


_SECURITY_SECTIONS: dict[str, type] = {"auth": AuthConfig, "web_tls": WebTlsConfig}
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


def is_loopback(host: str) -> bool:
    """True if a server bound to ``host`` is reachable from this machine only."""
    import ipaddress

    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _build_security_sections(raw: Mapping[str, Any],
                             environ: Mapping[str, str] | None) -> dict[str, Any]:
    """``[auth]`` and ``[web_tls]``: scalar keys as usual, ``tokens`` a list of token lines."""
    from engine.security.tokens import TokenError, parse_token_lines, split_token_lines

    out: dict[str, Any] = {}
    for name, cls in _SECURITY_SECTIONS.items():
        values = _section_values(raw, name, cls, environ)
        tokens = values.pop("tokens", None) if name == "auth" else None
        section = _build_section(name, cls, values)
        if name == "auth" and tokens is not None:
            if isinstance(tokens, str):
                tokens = split_token_lines(tokens)
            if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
                raise ConfigError("[auth] tokens must be a list of token lines")
            tokens = [t.strip() for t in tokens if t.strip() and not t.strip().startswith("#")]
            try:
                parse_token_lines(tokens, "[auth] tokens")
            except TokenError as exc:
                raise ConfigError(str(exc)) from None
            section = replace(section, tokens=tuple(tokens))
        out[name] = section
    auth, tls = out["auth"], out["web_tls"]
    if auth.rep_leaderboard not in REP_LEADERBOARD_POLICIES:
        raise ConfigError("[auth] rep_leaderboard must be one of "
                          + ", ".join(REP_LEADERBOARD_POLICIES))
    if (tls.certfile is None) != (tls.keyfile is None):
        raise ConfigError("[web_tls] certfile and keyfile go together")
    return out


#: SASL mechanisms the engine's clients (aiokafka, Faust) can actually use with the settings
#: the configuration offers; GSSAPI and OAUTHBEARER need more than a username and password.
SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")


def _validate_kafka_security(kafka: "KafkaConfig") -> None:
    proto, mechanism = kafka.security_protocol, kafka.sasl_mechanism
    if not proto.startswith("SASL"):
        if mechanism:
            raise ConfigError(f"[kafka] sasl_mechanism is set but security_protocol is {proto}; "
                              "use SASL_SSL (or SASL_PLAINTEXT)")
        return
    if mechanism not in SASL_MECHANISMS:
        raise ConfigError(f"[kafka] sasl_mechanism {mechanism!r} is not supported; use one of "
                          + ", ".join(SASL_MECHANISMS))
    if mechanism == "PLAIN" and proto != "SASL_SSL":
        raise ConfigError("[kafka] sasl_mechanism PLAIN sends the password in clear text: use it "
                          "with security_protocol SASL_SSL only (or SCRAM-SHA-512)")
    if not kafka.sasl_username:
        raise ConfigError("[kafka] sasl_username is required with a SASL security_protocol")
    if (kafka.sasl_password is None) == (kafka.sasl_password_file is None):
        raise ConfigError("[kafka] give exactly one of sasl_password (or KPI_KAFKA_SASL_PASSWORD) "
                          "and sasl_password_file")


def validate_exposure(config: "Config") -> None:
    """The engine refuses to serve its numbers beyond loopback without authentication."""
    host = config.worker.web_host
    if not is_loopback(host) and not config.auth.enabled:
        raise ConfigError(
            f"[worker] web_host {host!r} is reachable beyond this machine, but no tokens are "
            "configured: set [auth] tokens_file (or KPI_AUTH_TOKENS; `kpi-engine token new` "
            "makes them), or listen on 127.0.0.1")


@dataclass(frozen=True, slots=True)
class PeopleConfig:
    """``[people]``: the roster file (TOML or CSV, engine/people/roster.py), read by the worker
    (display names) and the gateway (CRM users -> reps and teams)."""

    roster: str | None = None


@dataclass(frozen=True, slots=True)
class Config:
    calendar: CalendarConfig = field(default_factory=CalendarConfig)
    money: MoneyConfig = field(default_factory=MoneyConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    targets: tuple[Target, ...] = ()
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    topics: TopicsConfig = field(default_factory=TopicsConfig)
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    web_tls: WebTlsConfig = field(default_factory=WebTlsConfig)
    gateway: GatewayConfig = field(default_factory=lambda: GatewayConfig())
    people: PeopleConfig = field(default_factory=PeopleConfig)


_SECTIONS: dict[str, type] = {
    "calendar": CalendarConfig,
    "money": MoneyConfig,
    "limits": LimitsConfig,
    "kafka": KafkaConfig,
    "topics": TopicsConfig,
    "worker": WorkerConfig,
    "people": PeopleConfig,
}

TARGET_PERIODS = PERIODS
MIN_RETENTION_DAYS = 732


def load_config(path: str | os.PathLike[str] | None = None,
                environ: Mapping[str, str] | None = None) -> Config:
    """Read defaults, then the TOML file, then environment overrides, and validate."""
    env = os.environ if environ is None else environ
    if path is None:
        path = env.get(CONFIG_ENV) or None
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            raw = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {p}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {p} is not valid TOML: {exc}") from None
    return config_from_mapping(raw, env)


def config_from_mapping(raw: Mapping[str, Any],
                        environ: Mapping[str, str] | None = None) -> Config:
    """Build a validated :class:`Config` from parsed TOML (and optional env overrides)."""
    unknown = (set(raw) - set(_SECTIONS) - {"targets", "pipeline", "gateway"}
               - set(_SECURITY_SECTIONS))
    if unknown:
        raise ConfigError(f"unknown config section(s): {', '.join(sorted(unknown))}")
    sections: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        sections[name] = _build_section(name, cls, _section_values(raw, name, cls, environ))
    sections.update(_build_security_sections(raw, environ))
    targets = _build_targets(raw.get("targets", []))
    pipeline = _build_pipeline(raw.get("pipeline", {}))
    sections["gateway"] = _build_gateway(raw.get("gateway", {}), environ or {})
    sections["people"] = _people_with_legacy_roster(sections["people"], sections["gateway"])
    config = Config(targets=targets, pipeline=pipeline, **sections)
    _validate(config)
    validate_exposure(config)
    _validate_gateway_stages(config)
    return config


def _people_with_legacy_roster(people: PeopleConfig, gateway: GatewayConfig) -> PeopleConfig:
    """``[people] roster``, or the older spelling ``[gateway] roster`` (one file either way)."""
    if gateway.roster is None:
        return people
    if people.roster is not None and people.roster != gateway.roster:
        raise ConfigError("[people] roster and [gateway] roster name different files: keep "
                          "[people] roster only (the worker and the gateway share it)")
    return PeopleConfig(roster=gateway.roster)


def _section_values(raw: Mapping[str, Any], name: str, cls: type,
                    environ: Mapping[str, str] | None) -> dict[str, Any]:
    """A section's keys from the file, then its ``KPI_<SECTION>_<KEY>`` overrides."""
    values = raw.get(name, {})
    if not isinstance(values, Mapping):
        raise ConfigError(f"[{name}] must be a table")
    values = dict(values)
    if environ:
        values.update(_env_overrides(name, cls, environ))
    return values


def _env_overrides(section: str, cls: type, environ: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields(cls):
        key = f"{ENV_PREFIX}{section}_{f.name}".upper()
        if key in environ:
            out[f.name] = environ[key]
    return out


def _coerce(section: str, name: str, value: Any, default: Any, annotation: str) -> Any:
    where = f"[{section}] {name}"
    if "int" in annotation and "str" not in annotation:
        if isinstance(value, bool):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                raise ConfigError(f"{where} must be an integer, got {value!r}") from None
        if isinstance(value, int):
            return value
        raise ConfigError(f"{where} must be an integer, got {value!r}")
    if "float" in annotation:
        if isinstance(value, bool):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where} must be a number, got {value!r}") from None
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a string, got {value!r}")
    return value


def _build_section(section: str, cls: type, values: dict[str, Any]) -> Any:
    known = {f.name: f for f in fields(cls)}
    unknown = set(values) - set(known)
    if unknown:
        raise ConfigError(f"unknown key(s) in [{section}]: {', '.join(sorted(unknown))}")
    kwargs = {
        name: _coerce(section, name, value, known[name].default, str(known[name].type))
        for name, value in values.items()
    }
    return cls(**kwargs)


def _build_targets(raw_targets: Any) -> tuple[Target, ...]:
    if not isinstance(raw_targets, list):
        raise ConfigError("[[targets]] must be an array of tables")
    out: list[Target] = []
    for i, t in enumerate(raw_targets, start=1):
        where = f"[[targets]] #{i}"
        if not isinstance(t, Mapping):
            raise ConfigError(f"{where} must be a table")
        unknown = set(t) - {"kpi", "period", "value", "team", "rep"}
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        for key in ("kpi", "period", "value"):
            if key not in t:
                raise ConfigError(f"{where}: missing '{key}'")
        if not isinstance(t["kpi"], str) or not t["kpi"]:
            raise ConfigError(f"{where}: 'kpi' must be a KPI name")
        if t["period"] not in TARGET_PERIODS:
            raise ConfigError(f"{where}: 'period' must be one of {', '.join(TARGET_PERIODS)}")
        value = t["value"]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: 'value' must be a number")
        if "team" in t and "rep" in t:
            raise ConfigError(f"{where}: a target names a team or a rep, not both")
        for key in ("team", "rep"):
            if key in t and (not isinstance(t[key], str) or not t[key]):
                raise ConfigError(f"{where}: '{key}' must be a non-empty string")
        if t["kpi"] not in TARGETABLE_KPIS:
            raise ConfigError(f"{where}: unknown or non-numeric kpi {t['kpi']!r}")
        if "team" in t and t["kpi"] not in TEAM_TARGETABLE:
            raise ConfigError(f"{where}: {t['kpi']} is a company-only KPI; it has no team target")
        if "rep" in t and t["kpi"] not in REP_TARGETABLE:
            raise ConfigError(f"{where}: {t['kpi']} is not a rep KPI; it has no rep target")
        out.append(Target(kpi=t["kpi"], period=t["period"], value=float(value),
                          team=t.get("team"), rep=t.get("rep")))
    return tuple(out)


def _build_pipeline(raw: Any) -> PipelineConfig:
    """``[[pipeline.stages]]`` (SPEC §7.1): ids unique identifiers, 0 ≤ p ≤ 1, a known category."""
    if not isinstance(raw, Mapping):
        raise ConfigError("[pipeline] must be a table")
    unknown = set(raw) - {"stages"}
    if unknown:
        raise ConfigError(f"unknown key(s) in [pipeline]: {', '.join(sorted(unknown))}")
    raw_stages = raw.get("stages", [])
    if not isinstance(raw_stages, list):
        raise ConfigError("[[pipeline.stages]] must be an array of tables")
    if len(raw_stages) > MAX_STAGES:
        raise ConfigError(f"[[pipeline.stages]]: at most {MAX_STAGES} stages, got {len(raw_stages)}")
    stages: list[Stage] = []
    seen: set[str] = set()
    for i, st in enumerate(raw_stages, start=1):
        where = f"[[pipeline.stages]] #{i}"
        if not isinstance(st, Mapping):
            raise ConfigError(f"{where} must be a table")
        unknown = set(st) - {"id", "probability", "category"}
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        for key in ("id", "probability", "category"):
            if key not in st:
                raise ConfigError(f"{where}: missing '{key}'")
        stage_id = st["id"]
        if (not isinstance(stage_id, str) or not 0 < len(stage_id) <= 128
                or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in stage_id)):
            raise ConfigError(f"{where}: 'id' must be 1–128 characters without control "
                              f"characters, got {stage_id!r}")
        if stage_id in seen:
            raise ConfigError(f"{where}: duplicate stage id {stage_id!r}")
        seen.add(stage_id)
        p = st["probability"]
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
            raise ConfigError(f"{where} ({stage_id}): 'probability' must be a number in [0, 1], "
                              f"got {p!r}")
        if st["category"] not in FORECAST_CATEGORIES:
            raise ConfigError(f"{where} ({stage_id}): 'category' must be one of "
                              f"{', '.join(FORECAST_CATEGORIES)}, got {st['category']!r}")
        stages.append(Stage(stage_id, float(p), st["category"]))
    return PipelineConfig(tuple(stages))


def _validate(config: Config) -> None:
    cal = config.calendar
    try:
        ZoneInfo(cal.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"[calendar] timezone {cal.timezone!r} is not an IANA time zone") from None
    if cal.week_start not in ("monday", "sunday"):
        raise ConfigError("[calendar] week_start must be 'monday' or 'sunday'")
    if not 1 <= cal.fiscal_year_start_month <= 12:
        raise ConfigError("[calendar] fiscal_year_start_month must be 1..12")
    money = config.money
    if not money.currency:
        raise ConfigError("[money] currency must not be empty")
    if not 0 < money.gross_margin <= 1:
        raise ConfigError("[money] gross_margin must be in (0, 1]")
    lim = config.limits
    if lim.max_event_bytes <= 0:
        raise ConfigError("[limits] max_event_bytes must be positive")
    if lim.max_future_skew_seconds < 0:
        raise ConfigError("[limits] max_future_skew_seconds must be ≥ 0")
    if lim.retention_days < MIN_RETENTION_DAYS:
        # The oldest reported window, fiscal year offset 1, starts at most 731 days before as_of.
        raise ConfigError(f"[limits] retention_days must be ≥ {MIN_RETENTION_DAYS} "
                          "to cover the oldest reported window (year offset 1)")
    if config.topics.partitions < 1:
        raise ConfigError("[topics] partitions must be ≥ 1")
    if config.topics.replication_factor < 1:
        raise ConfigError("[topics] replication_factor must be ≥ 1")
    if not 1 <= config.topics.min_insync_replicas <= config.topics.replication_factor:
        raise ConfigError("[topics] min_insync_replicas must be 1..replication_factor")
    if config.worker.standby_replicas < 0:
        raise ConfigError("[worker] standby_replicas must be ≥ 0")
    if config.worker.answers not in ANSWER_MODES:
        raise ConfigError(f"[worker] answers must be one of {', '.join(ANSWER_MODES)}, "
                          f"not {config.worker.answers!r}")
    if not 0 <= config.worker.web_port <= 65535:
        raise ConfigError("[worker] web_port must be 0..65535")
    proto = config.kafka.security_protocol
    if proto not in ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"):
        raise ConfigError("[kafka] security_protocol must be PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL")
    if proto.startswith("SASL") and not config.kafka.sasl_mechanism:
        raise ConfigError("[kafka] sasl_mechanism is required with a SASL security_protocol")
    _validate_kafka_security(config.kafka)


def with_overrides(config: Config, **sections: Any) -> Config:
    """A copy with whole sections replaced (tests and the CLI use it)."""
    return replace(config, **sections)


# --- [gateway] and [[gateway.sources]]: the CRM webhook gateway (kpi-engine gateway) ------------
#
# Kept in one block: the gateway is a separate service that only shares the Kafka settings, the
# topics and the decoder's rules with the engine. Secrets come from the TOML value, a file
# (``secret_file``, e.g. a mounted Kubernetes secret) or an environment variable (``secret_env``);
# they are kept out of ``repr`` so that a logged config never shows them.

GATEWAY_SOURCE_KINDS = ("contract", "pipedrive", "hubspot", "salesforce")
UNKNOWN_USER_POLICIES = ("dead_letter", "default_team")


@dataclass(frozen=True, slots=True)
class GatewaySource:
    """One CRM (or script) that posts to the gateway, at its own path."""

    name: str
    kind: str
    path: str
    secret: str | None = field(default=None, repr=False)  # token, password or client secret
    username: str | None = None  # Pipedrive HTTP Basic user
    org_id: str | None = None  # Salesforce organisation id (15 or 18 characters)
    public_url: str | None = None  # HubSpot: the URL HubSpot posts to (it is signed)
    stages: tuple[tuple[str, str], ...] = ()  # CRM stage id -> configured pipeline stage id
    won_stages: tuple[str, ...] = ()  # HubSpot: deal stage ids that close a deal as won
    lost_stages: tuple[str, ...] = ()  # ... and as lost
    qualified_values: tuple[str, ...] = ()  # lifecycle stage / lead status meaning "qualified"

    def stage_map(self) -> dict[str, str]:
        return dict(self.stages)


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    host: str = "127.0.0.1"
    port: int = 8088
    max_body_bytes: int = 1_048_576
    roster: str | None = None  # older spelling of [people] roster (read there, not here)
    unknown_user: str = "dead_letter"  # or "default_team"
    default_team: str | None = None
    state_topic: str = "crm.gateway.state"  # compacted: HubSpot object state
    kafka_timeout_seconds: float = 10.0  # longest wait for Kafka's acknowledgement, then 503
    sources: tuple[GatewaySource, ...] = ()


_GATEWAY_SOURCE_DEFAULTS = {
    "hubspot": {"won_stages": ("closedwon",), "lost_stages": ("closedlost",),
                "qualified_values": ("salesqualifiedlead",)},
    "salesforce": {"qualified_values": ("Qualified",)},
}


def _build_gateway(raw: Any, environ: Mapping[str, str]) -> GatewayConfig:
    if not isinstance(raw, Mapping):
        raise ConfigError("[gateway] must be a table")
    values = dict(raw)
    raw_sources = values.pop("sources", [])
    scalar = {f.name for f in fields(GatewayConfig)} - {"sources"}
    for name in scalar:
        key = f"{ENV_PREFIX}GATEWAY_{name}".upper()
        if key in environ:
            values[name] = environ[key]
    gateway = _build_section("gateway", _GatewayScalars, values)
    if gateway.unknown_user not in UNKNOWN_USER_POLICIES:
        raise ConfigError("[gateway] unknown_user must be 'dead_letter' or 'default_team'")
    if gateway.unknown_user == "default_team" and not gateway.default_team:
        raise ConfigError("[gateway] default_team is required with unknown_user = 'default_team'")
    if gateway.max_body_bytes <= 0:
        raise ConfigError("[gateway] max_body_bytes must be positive")
    if gateway.kafka_timeout_seconds <= 0:
        raise ConfigError("[gateway] kafka_timeout_seconds must be positive")
    if not 0 <= gateway.port <= 65535:
        raise ConfigError("[gateway] port must be 0..65535")
    if not isinstance(raw_sources, list):
        raise ConfigError("[[gateway.sources]] must be an array of tables")
    sources = tuple(_build_gateway_source(i, s, environ) for i, s in enumerate(raw_sources, 1))
    for attribute in ("name", "path"):
        seen = [getattr(s, attribute) for s in sources]
        for value in seen:
            if seen.count(value) > 1:
                raise ConfigError(f"[[gateway.sources]] {attribute} {value!r} is used twice")
    return GatewayConfig(sources=sources, **{f.name: getattr(gateway, f.name)
                                             for f in fields(_GatewayScalars)})


@dataclass(frozen=True, slots=True)
class _GatewayScalars:
    host: str = "127.0.0.1"
    port: int = 8088
    max_body_bytes: int = 1_048_576
    roster: str | None = None
    unknown_user: str = "dead_letter"
    default_team: str | None = None
    state_topic: str = "crm.gateway.state"
    kafka_timeout_seconds: float = 10.0


def _build_gateway_source(index: int, raw: Any, environ: Mapping[str, str]) -> GatewaySource:
    where = f"[[gateway.sources]] #{index}"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a table")
    allowed = {"name", "kind", "path", "secret", "secret_file", "secret_env", "username",
               "org_id", "public_url", "stages", "won_stages", "lost_stages", "qualified_values"}
    unknown = set(raw) - allowed
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    name = raw.get("name")
    if not isinstance(name, str) or not name or not name.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(f"{where}: 'name' must be letters, digits, '-' or '_'")
    where = f"[[gateway.sources]] {name!r}"
    kind = raw.get("kind")
    if kind not in GATEWAY_SOURCE_KINDS:
        raise ConfigError(f"{where}: 'kind' must be one of {', '.join(GATEWAY_SOURCE_KINDS)}")
    path = raw.get("path", f"/hooks/{name}")
    if not isinstance(path, str) or not path.startswith("/"):
        raise ConfigError(f"{where}: 'path' must start with '/'")
    for key in ("username", "org_id", "public_url"):
        if key in raw and (not isinstance(raw[key], str) or not raw[key]):
            raise ConfigError(f"{where}: '{key}' must be a non-empty string")
    secret = _gateway_secret(where, raw, environ)
    if kind in ("contract", "pipedrive", "hubspot") and secret is None:
        raise ConfigError(f"{where}: a {kind} source needs 'secret', 'secret_file' or 'secret_env'")
    if kind == "pipedrive" and "username" not in raw:
        raise ConfigError(f"{where}: a pipedrive source needs 'username' (HTTP Basic)")
    if kind == "salesforce" and "org_id" not in raw:
        raise ConfigError(f"{where}: a salesforce source needs 'org_id'")
    if kind == "hubspot" and "public_url" not in raw:
        raise ConfigError(f"{where}: a hubspot source needs 'public_url' (HubSpot signs it)")
    stages = raw.get("stages", {})
    if not isinstance(stages, Mapping) or not all(
            isinstance(v, str) and v for v in stages.values()):
        raise ConfigError(f"{where}: 'stages' must map CRM stage ids to stage ids (strings)")
    lists: dict[str, tuple[str, ...]] = dict(_GATEWAY_SOURCE_DEFAULTS.get(kind, {}))
    for key in ("won_stages", "lost_stages", "qualified_values"):
        if key in raw:
            value = raw[key]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{where}: '{key}' must be a list of strings")
            lists[key] = tuple(value)
    return GatewaySource(name=name, kind=kind, path=path, secret=secret,
                         username=raw.get("username"), org_id=raw.get("org_id"),
                         public_url=raw.get("public_url"),
                         stages=tuple((str(k), v) for k, v in stages.items()), **lists)


def _gateway_secret(where: str, raw: Mapping[str, Any], environ: Mapping[str, str]) -> str | None:
    given = [key for key in ("secret", "secret_file", "secret_env") if key in raw]
    if len(given) > 1:
        raise ConfigError(f"{where}: give one of 'secret', 'secret_file', 'secret_env'")
    if not given:
        return None
    key = given[0]
    value = raw[key]
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: '{key}' must be a non-empty string")
    if key == "secret":
        return value
    if key == "secret_env":
        env = environ if environ else os.environ
        secret = env.get(value)
        if not secret:
            raise ConfigError(f"{where}: environment variable {value} (secret_env) is not set")
        return secret
    try:
        secret = Path(value).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read secret_file {value}: {exc.strerror}") from None
    if not secret:
        raise ConfigError(f"{where}: secret_file {value} is empty")
    return secret


def _validate_gateway_stages(config: Config) -> None:
    """With ``[[pipeline.stages]]``, every source's stage mapping must name configured stages."""
    configured = {stage.id for stage in config.pipeline.stages}
    if not configured:
        return
    for source in config.gateway.sources:
        for crm_stage, stage in source.stages:
            if stage not in configured:
                raise ConfigError(f"[[gateway.sources]] {source.name!r}: stages maps {crm_stage!r} "
                                  f"to {stage!r}, which is not a [[pipeline.stages]] id")
