"""Loading a config file into an immutable snapshot.

``load(path, environ)`` reads the YAML, applies ``SWITCHBOARD_…`` overrides from ``environ``,
validates it, resolves secret references and converts everything to domain objects once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from service.agents.spec import AgentSpec, CachePolicy, MemoryPolicy
from service.auth.policy import AuthPolicy, build_auth, keys_path
from service.config.base import SecretRef
from service.config.chain_model import ObservabilityConfig, RateLimitsConfig
from service.config.guards_model import ExternalGuardConfig, GuardConfig
from service.config.model import (
    AgentConfig,
    Config,
    ParametersConfig,
    ReloadConfig,
    ServerConfig,
    TargetConfig,
    TransportConfig,
    WorkersConfig,
)
from service.config.state_model import BudgetConfig, StateConfig
from service.config.tools_load import loop_policy, referenced_tool_files, tools_spec
from service.domain import Parameters, ResponseFormat, ResponseFormatType, Tool
from service.guards import Action, Guard, agent_guards, compile_guards
from service.guards.external import ExternalJudge
from service.providers.base import TargetSpec
from service.routing.config import resilience_spec, route_names, route_policy
from service.routing.policy import ResilienceSpec
from service.schemas import Schemas
from service.secrets import Secret
from service.tools.spec import ToolsSpec
from service.usage.price_data import PriceData
from service.usage.pricing import PriceTable, price_table
from service.workflows.spec import WorkflowSpec, workflow_spec

ENV_PREFIX = "SWITCHBOARD_"


class ConfigError(Exception):
    """The config cannot be used; the message names the file and the field."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One validated config: what every call is served from, swapped whole on reload."""

    source: str
    server: ServerConfig
    targets: Mapping[str, TargetSpec]
    agents: Mapping[str, AgentSpec]
    workflows: Mapping[str, WorkflowSpec] = field(default_factory=dict)
    resilience: ResilienceSpec = field(default_factory=ResilienceSpec)
    auth: AuthPolicy = field(default_factory=AuthPolicy)
    rate_limits: RateLimitsConfig = field(default_factory=RateLimitsConfig)
    observability: ObservabilityConfig = field(default_factory=ObservabilityConfig)
    state: StateConfig = field(default_factory=StateConfig)
    pricing: PriceTable = field(default_factory=PriceTable)
    budgets: tuple[BudgetConfig, ...] = ()
    postgres_dsn: Secret | None = None
    transport: TransportConfig = field(default_factory=TransportConfig)
    reload: ReloadConfig = field(default_factory=ReloadConfig)
    workers: WorkersConfig = field(default_factory=WorkersConfig)
    # Files besides ``source`` that this snapshot was read from (keys, secrets): a reload
    # watches them too, so a rotated Secret is picked up.
    files: tuple[str, ...] = ()
    # The agents' JSON schemas compiled (and callers', remembered): validation and guards.
    schemas: Schemas = field(default_factory=Schemas, compare=False)
    tools: ToolsSpec = field(default_factory=ToolsSpec)  # MCP servers and HTTP tools


def load(path: str | Path, environ: Mapping[str, str]) -> Snapshot:
    """Load, override, validate and convert the config file at ``path``.

    Raises:
        ConfigError: the file is missing, not YAML, invalid, or names a secret that is absent.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    raw = apply_env_overrides(raw, environ)
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: invalid config:\n{_describe(exc)}") from exc
    return build_snapshot(config, source=str(path), environ=environ)


def apply_env_overrides(raw: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """``SWITCHBOARD_SERVER__PORT=6000`` sets ``server.port``: ``__`` separates levels.

    Values are parsed as YAML scalars, so numbers and booleans keep their types.
    """
    result: dict[str, Any] = json.loads(json.dumps(raw))  # a deep copy of plain data
    for name, value in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        keys = [k.lower() for k in name[len(ENV_PREFIX) :].split("__")]
        node = result
        for key in keys[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{name}: {'.'.join(keys)} does not name a config field")
            node = child
        try:
            node[keys[-1]] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            # Say what is wrong, never the value: an override may carry a password.
            problem = getattr(exc, "problem", None) or "not valid YAML"
            raise ConfigError(f"{name}: not a valid value ({problem})") from None
    return result


def _describe(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "(top level)"
        lines.append(f"  {where}: {error['msg']}")
    return "\n".join(lines)


def build_snapshot(config: Config, *, source: str, environ: Mapping[str, str]) -> Snapshot:
    """Convert a validated config to domain objects, resolving secrets from ``environ``.

    Raises:
        ConfigError: a secret reference names an unset variable or an unreadable file.
    """
    targets = {
        name: _target(name, target, source, environ) for name, target in config.targets.items()
    }
    try:
        guards = compile_guards(
            config.guards, external=lambda name, guard: _external(name, guard, source, environ)
        )
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    agents = {
        name: _agent(name, agent, config, targets, guards)
        for name, agent in sorted(config.agents.items())
    }
    try:
        auth = build_auth(config.auth, environ, Path(source).parent)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return Snapshot(
        source=source,
        server=config.server,
        targets=targets,
        agents=agents,
        workflows={n: workflow_spec(n, w) for n, w in sorted(config.workflows.items())},
        resilience=resilience_spec(config.resilience),
        auth=auth,
        rate_limits=config.rate_limits,
        observability=config.observability,
        state=config.state,
        pricing=_prices(config, targets, source),
        budgets=tuple(config.budgets),
        postgres_dsn=_postgres_dsn(config.state, source, environ),
        transport=config.transport,
        reload=config.reload,
        workers=config.workers,
        files=referenced_files(config, source),
        schemas=Schemas(_schemas_of(agents.values())),
        tools=tools_spec(
            config.mcp_servers,
            config.http_tools,
            source=source,
            secret=lambda ref, where: _secret(ref, where, environ),
        ),
    )


def _schemas_of(agents: Iterable[AgentSpec]) -> list[Mapping[str, Any]]:
    """The JSON schemas the agents' config holds: tools' parameters, response formats'."""
    found: list[Mapping[str, Any]] = []
    for agent in agents:
        found += [t.parameters for t in agent.tools if t.parameters]
        fmt = agent.parameters.response_format
        if fmt is not None and fmt.json_schema is not None:
            found.append(fmt.json_schema)
    return found


def _external(name: str, guard: GuardConfig, source: str, environ: Mapping[str, str]) -> Guard:
    assert isinstance(guard, ExternalGuardConfig)
    key = guard.api_key
    secret = _secret(key, f"{source}: guards.{name}.api_key", environ) if key else None
    judge = ExternalJudge(name, guard.url, guard.timeout_s, guard.fail_mode == "open", secret)
    return Guard(name, guard.kind, Action.BLOCK, judge=judge)


def _prices(config: Config, targets: Mapping[str, TargetSpec], source: str) -> PriceTable:
    """Every target's price from genai-prices' bundled data and ``pricing:``.

    Raises:
        ConfigError: an override leaves a rate unset for a model the data lacks.
    """
    try:
        return price_table(config.pricing, targets, PriceData())
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def referenced_files(config: Config, source: str) -> tuple[str, ...]:
    """The files a config reads besides itself: secret files and the API keys file."""
    files = [t.api_key.file for t in config.targets.values() if t.api_key and t.api_key.file]
    files += [
        g.api_key.file
        for g in config.guards.values()
        if isinstance(g, ExternalGuardConfig) and g.api_key and g.api_key.file
    ]
    files += referenced_tool_files(config.mcp_servers, config.http_tools)
    keys = keys_path(config.auth, Path(source).parent)
    if keys is not None:
        files.append(str(keys))
    return tuple(files)


def _postgres_dsn(state: StateConfig, source: str, environ: Mapping[str, str]) -> Secret | None:
    if state.backend != "shared":
        return None
    dsn = state.postgres_dsn
    if isinstance(dsn, str):
        return Secret(dsn)
    return _secret(dsn, f"{source}: state.postgres_dsn", environ)


def _secret(ref: SecretRef, where: str, environ: Mapping[str, str]) -> Secret:
    if ref.env is not None:
        value = environ.get(ref.env)
        if not value:
            raise ConfigError(f"{where}: environment variable {ref.env} is not set")
        return Secret(value)
    assert ref.file is not None
    try:
        return Secret(Path(ref.file).read_text(encoding="utf-8").strip())
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read secret file {ref.file}: {exc.strerror}") from exc


def _target(name: str, target: TargetConfig, source: str, environ: Mapping[str, str]) -> TargetSpec:
    where = f"{source}: targets.{name}.api_key"
    return TargetSpec(
        name=name,
        provider=target.provider,
        model=target.model,
        base_url=target.base_url,
        api_key=_secret(target.api_key, where, environ) if target.api_key else None,
        parameters=parameters_from_config(target.parameters),
        timeout_s=target.timeout_s,
        options=_options(target),
        first_token_timeout_s=target.first_token_timeout_s,
        idle_timeout_s=target.idle_timeout_s,
    )


def _options(target: TargetConfig) -> dict[str, Any]:
    """The provider-specific options of ``target`` as plain values."""
    if target.provider == "mock":
        return target.mock.model_dump()
    if target.provider == "anthropic":
        return target.anthropic.model_dump()
    return target.openai.model_dump()


def parameters_from_config(config: ParametersConfig) -> Parameters:
    fmt = config.response_format
    return Parameters(
        temperature=config.temperature,
        max_tokens=config.max_tokens,
        top_p=config.top_p,
        stop=tuple(config.stop),
        seed=config.seed,
        response_format=(
            ResponseFormat(
                type=ResponseFormatType(fmt.type),
                schema_name=fmt.schema_name,
                json_schema=fmt.json_schema,
                strict=fmt.strict,
            )
            if fmt
            else None
        ),
    )


def _agent(
    name: str,
    agent: AgentConfig,
    config: Config,
    targets: Mapping[str, TargetSpec],
    guards: Mapping[str, Guard],
) -> AgentSpec:
    routing = route_policy(agent.route, config.resilience, targets)
    fingerprint = agent_version_hash(agent, config.targets, config)
    return AgentSpec(
        name=name,
        description=agent.description,
        version=agent.version or fingerprint,
        fingerprint=fingerprint,
        system_prompt=agent.system_prompt,
        route=routing.specs,
        parameters=parameters_from_config(agent.parameters),
        overridable_parameters=frozenset(agent.overridable_parameters),
        tools=tuple(
            Tool(name=t.name, description=t.description, parameters=t.parameters)
            for t in agent.tools
        ),
        accepts_caller_tools=agent.accepts_caller_tools,
        memory=MemoryPolicy(agent.memory.max_turns, agent.memory.max_tokens),
        cache=CachePolicy(agent.cache.mode, agent.cache.ttl_s),
        routing=routing,
        guards=agent_guards(agent.guards, guards),
        loop=loop_policy(agent.server_tools, agent.loop),
    )


def agent_version_hash(
    agent: AgentConfig, target_configs: Mapping[str, TargetConfig], config: Config | None = None
) -> str:
    """A short hash of everything that shapes the agent's answers: its definition, the
    provider, model and parameters of each target on its route (never their secrets), and
    the definitions of the guards it lists (a changed guard must not be served a cached
    answer the old one let through)."""
    definition: dict[str, Any] = {
        # Tool fields only where set: an agent without server tools keeps its old hash.
        "agent": agent.model_dump(
            mode="json",
            exclude={"guards"} if agent.server_tools else {"guards", "server_tools", "loop"},
        ),
        "route": [
            target_configs[t].model_dump(mode="json", exclude={"api_key", "base_url"})
            for t in route_names(agent.route)
        ],
    }
    if agent.guards is not None and config is not None:
        listed = sorted({*agent.guards.input, *agent.guards.output, *agent.guards.tool_call})
        definition["guards"] = {
            "lists": agent.guards.model_dump(mode="json"),
            "definitions": [
                config.guards[g].model_dump(mode="json", exclude={"api_key"}) for g in listed
            ],
        }
    digest = hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()
    return f"h-{digest[:12]}"
