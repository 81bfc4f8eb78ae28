"""Settings: one typed tree, from defaults < TOML file < PLASTICD_* env < CLI flags.

    [model]                         PLASTICD_MODEL__NEURONS=800
    neurons = 800                   plasticd run --set model.neurons=800

Every field has a documented default (``plasticd config`` prints them all).
Settings are passed around explicitly; nothing is read at import time.
"""

from __future__ import annotations

import contextvars
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from plasticd.engine_settings import (  # the Engine's sections, re-exported: the tree is here
    RETIRED,
    DriftSettings,
    GrowthSettings,
    MergeSettings,
    ModelSettings,
    PlasticitySettings,
    ReplaySettings,
    TrainSettings,
)
from plasticd.engine_settings import Section as _Section
from plasticd.errors import ConfigError
from plasticd.samples.limits import DEFAULT_LIMITS  # the caps' one home: these settings expose three of them

LOOP_WAIT_SECONDS = 0.2  # the worker loop's longest idle wait for a message: its period when idle (service/worker.py)
_TOML_FILE: contextvars.ContextVar[Path | None] = contextvars.ContextVar("plasticd_toml_file", default=None)


__all__ = [
    "RETIRED",
    "CheckpointSettings",
    "DaemonSettings",
    "DriftSettings",
    "EvolutionSettings",
    "GrowthSettings",
    "LimitSettings",
    "LogSettings",
    "MergeSettings",
    "MetricsSettings",
    "ModelSettings",
    "PathSettings",
    "PlasticitySettings",
    "ReplaySettings",
    "ReplicaSettings",
    "RuntimeSettings",
    "Settings",
    "TrainSettings",
    "check_environment",
    "config_file_from_env",
    "load_settings",
]


class EvolutionSettings(_Section):
    """A population of challengers that learn beside the champion; promotion only on evidence (plasticd/evolution/)."""

    enabled: bool = Field(False, description="run challengers beside the champion at all (false: one network, as before)")
    population: int = Field(3, ge=0, le=32, description="challengers P learning beside the champion")
    budget: float = Field(
        0.5, ge=0.0, le=4.0, description="challengers' work per sample, as a fraction of the champion's (sample leases)"
    )
    backlog_budget: float = Field(
        0.3, ge=0.0, le=4.0, description="the budget's cap on full micro-batches (backlog), so throughput stays >= ~0.75x"
    )
    min_samples: int = Field(500, ge=1, description="labelled samples a challenger scores before it may be promoted or retired")
    confidence: float = Field(
        0.05, gt=0.0, lt=1.0, description="δ of the Hoeffding bounds: promote when challenger's upper < champion's lower"
    )
    bound: Literal["hoeffding", "paired"] = Field(
        "hoeffding",
        description="hoeffding: ChaCha's two intervals; paired: one empirical-Bernstein interval on the paired differences",
    )
    cost_weight: float = Field(
        1.0, ge=0.0, description="the champion rule's one knob: points of accuracy one halving of the work per sample is worth"
    )
    check_every: int = Field(250, ge=1, description="labelled samples between promotion, retirement and spawning checks")
    ensemble: bool = Field(
        False, description="predict by the front's accuracy-weighted vote instead of the champion alone (ARF-style)"
    )
    spawn_on_drift: bool = Field(True, description="a drift alarm of the champion starts a fresh challenger of its genome")
    repair_every: int = Field(
        0, ge=0, description="labelled samples between neural-repair passes over every candidate (0: repair only as a mutation)"
    )
    max_neurons: int = Field(800, ge=2, le=65536, description="largest N a genome may have")


class RuntimeSettings(_Section):
    """Where and how the process computes."""

    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto picks CUDA when available")
    seed: int = Field(0, ge=0, description="seed for initialisation and stream order")
    threads: int = Field(
        1,
        ge=0,
        description="torch intra-op threads (0: torch's default, one per core). 1 by default: a step over one sample or "
        "a micro-batch is too small to share, and on a busy host an OpenMP pool per core ran 10-40x slower (bench step)",
    )


class PathSettings(_Section):
    """Folders and files. Relative paths are taken from paths.root (unset: the working directory)."""

    root: Path | None = Field(
        None,
        description="folder the relative paths below are taken from (unset: the working directory); "
        "lets 'plasticd status' find a service's state from anywhere",
    )
    dataset: Path = Field(Path("/usr/share/datasets/fashion-mnist"), description="Fashion-MNIST IDX .gz folder")
    inbox: Path = Field(Path("data_inbox"), description="producers drop sample files here")
    processed: Path = Field(Path("data_processed"), description="inbox files go here once learned")
    failed: Path = Field(Path("data_failed"), description="quarantine for invalid files, with .error.json sidecars")
    work: Path = Field(Path("data_work"), description="claimed files wait here until a checkpoint covers them")
    checkpoints: Path = Field(Path("checkpoints"), description="checkpoint folder")
    state: Path = Field(Path("state"), description="status file and predictions journal")

    @model_validator(mode="before")
    @classmethod
    def _under_root(cls, data: Any) -> Any:
        """With ``root`` set, every relative path is taken from it (an absolute one stays as it is)."""
        if not isinstance(data, Mapping) or data.get("root") in (None, ""):
            return data
        root = Path(data["root"]).absolute()
        out = dict(data, root=root)
        for name, field in cls.model_fields.items():
            if name == "root":
                continue
            value = data.get(name, field.default)
            if value is not None:
                out[name] = root / Path(value)  # root / an absolute path is that path
        return out


class DaemonSettings(_Section):
    """The long-running service: inbox watching, idle maintenance, status."""

    idle_seconds: float = Field(5.0, gt=0.0, description="quiet time before an idle rewiring cycle")
    rescan_seconds: float = Field(5.0, gt=0.0, description="period of the safety rescan of the inbox")
    settle_seconds: float = Field(
        1.0, ge=0.0, description="files found by a scan (not by an event) must be this old before they are read"
    )
    status_seconds: float = Field(1.0, gt=0.0, description="period of status-file updates and watchdog pings")
    result_files: bool = Field(
        False, description="write <name>.pred.json (the file's prediction records) next to each processed file, before it"
    )


class CheckpointSettings(_Section):
    """When the model is saved; claimed files wait in paths.work until a checkpoint covers them."""

    every_samples: int = Field(2000, ge=1, description="checkpoint after this many samples")
    every_seconds: float = Field(60.0, gt=0.0, description="... or this many seconds with unsaved samples")
    idle_seconds: float = Field(1.0, ge=0.0, description="... or this long without new samples")
    keep: int = Field(3, ge=1, le=100, description="the newest checkpoints kept on disk, whatever their age")
    keep_hourly: int = Field(24, ge=0, le=10000, description="... then the newest of each hour, this many hours back")
    keep_daily: int = Field(7, ge=0, le=10000, description="... then the newest of each day, this many days back")
    max_total_bytes: int = Field(
        0,
        ge=0,
        description="checkpoints kept fit in this many bytes in all: oldest go first, never the newest (0: no budget)",
    )
    retry_seconds: float = Field(
        5.0,
        gt=0.0,
        description=(
            "after a failed checkpoint (disk full, I/O error), wait this long before the next try; doubles per failure, up to 60x"
        ),
    )
    max_failures: int = Field(
        10, ge=0, description="consecutive failed checkpoints before the daemon stops with exit code 1 (0: never stop)"
    )
    min_interval_seconds: float = Field(
        30.0,
        ge=0.0,
        description="idle and timed checkpoints come at most this often (caps disk writes under a trickle;"
        " files wait in paths.work meanwhile); every_samples and shutdown checkpoints are not held back",
    )
    max_time_share: float = Field(
        0.05,
        ge=0.0,
        lt=1.0,
        description="under a sustained backlog, every_samples checkpoints wait until the last save's duration is at"
        " most this share of the time since it began (0: no bound); files wait in paths.work meanwhile",
    )
    max_bytes_per_hour: int = Field(
        0,
        ge=0,
        description="optional write budget for idle and timed checkpoints: stretches the interval to"
        " checkpoint size x 3600 / budget (0: no budget)",
    )


class LimitSettings(_Section):
    """What a sample file may contain; anything beyond is quarantined before it is parsed."""

    max_file_bytes: int = Field(DEFAULT_LIMITS.max_file_bytes, ge=1, description="largest sample file read (bytes)")
    max_samples: int = Field(DEFAULT_LIMITS.max_samples, ge=1, description="most samples in one file")
    max_abs_value: float = Field(
        DEFAULT_LIMITS.max_abs_value,
        gt=0.0,
        description="largest |x| accepted (never above float32's 3.4e38); it guards the arithmetic, not the data:"
        " within 1e15 the input scaler's float32 variance stays finite ((2e15)^2 = 4e30) with room to spare,"
        " and real features (prices, house values, counts) pass; a batch whose statistics still overflow is refused"
        " by the engine as non_finite_training",
    )


class LogSettings(_Section):
    """Structured logging."""

    level: Literal["debug", "info", "warning", "error"] = Field("info", description="lowest level logged")
    format: Literal["auto", "json", "console"] = Field("auto", description="auto: console on a TTY, else JSON lines")
    file: Path | None = Field(None, description="also append JSON lines here")


class MetricsSettings(_Section):
    """Prometheus metrics over HTTP (/metrics, /healthz); off by default (plasticd/service/prometheus.py)."""

    enabled: bool = Field(False, description="serve /metrics and /healthz while the worker loop runs (run, ingest)")
    host: str = Field(
        "127.0.0.1",
        min_length=1,
        description="address to listen on: 127.0.0.1 is this host only; 0.0.0.0 or :: every interface (the systemd unit's"
        " RestrictAddressFamilies= must then allow AF_INET, or AF_INET6 for ::)",
    )
    port: int = Field(9464, ge=0, le=65535, description="TCP port (0: any free port, named in the metrics.listening event)")

    @field_validator("host")
    @classmethod
    def _an_address_or_a_host_name(cls, host: str) -> str:
        """An IPv4/IPv6 address or a host name (RFC 1123); all-numeric dotted names must be valid IPv4."""
        import ipaddress
        import re

        try:
            ipaddress.ip_address(host)
            return host
        except ValueError:
            pass
        label = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
        numeric = re.fullmatch(r"[0-9.]+", host) is not None
        if numeric or len(host) > 253 or not re.fullmatch(rf"{label}(\.{label})*\.?", host):
            raise ValueError(f"{host!r} is neither an IP address (e.g. 127.0.0.1, ::1) nor a host name (e.g. localhost)")
        return host

    stall_seconds: float = Field(
        60.0,
        gt=0.0,
        description="/healthz answers 503 once the worker loop has not turned for this long (a step, rewiring"
        f" cycle or checkpoint that takes longer counts as a stall); above the loop's own period ({LOOP_WAIT_SECONDS:g} s)",
    )
    predict: bool = Field(
        True, description="serve POST /predict: the live model's predictions (never learned from) on the same server"
    )
    snapshot_ms: float = Field(
        5.0,
        ge=0.0,
        description="while it learns, the worker publishes the snapshot POST /predict answers from at most this often"
        " (and at once when its queue is empty; never more than 1/20 of its time cloning)",
    )

    @field_validator("stall_seconds")
    @classmethod
    def _stall_above_the_loop_period(cls, value: float) -> float:
        if value <= LOOP_WAIT_SECONDS:
            raise ValueError(
                f"{value:g} s is not above the worker loop's own period: an idle loop turns"
                f" every {LOOP_WAIT_SECONDS:g} s (it waits that long for work), so /healthz would call each idle wait a"
                f" stall; use more than {LOOP_WAIT_SECONDS:g} (default 60)"
            )
        return value


class ReplicaSettings(_Section):
    """Replicas under torchrun that learn one model (plasticd/distributed/); ignored by a single process."""

    sync_samples: int = Field(
        1000, ge=1, description="replicas combine their weights after this many labelled samples, counted over the group"
    )
    sync_seconds: float = Field(10.0, gt=0.0, description="... or after this many seconds with something learned")
    sync_ramp: float = Field(
        0.25,
        ge=0.0,
        description="> 0: while the group's model is young the sync interval is this share of the labelled samples "
        "the group has learned (at least 64), growing to sync_samples; 0: always sync_samples",
    )
    combine: Literal["sum", "mean", "outer"] = Field(
        "outer",
        description="sum: the agreed weights plus every replica's change since the last sync (the group moves as one "
        "model that took every replica's steps); mean: the replicas' weights averaged; outer: an outer SGD step with "
        "Nesterov momentum on the averaged change (DiLoCo, replicas.outer_lr and outer_momentum)",
    )
    outer_lr: float = Field(1.0, gt=0.0, description="combine = outer: the outer step's rate on the averaged change")
    outer_momentum: float = Field(
        0.5, ge=0.0, lt=1.0, description="combine = outer: Nesterov momentum of the outer step (0: none)"
    )
    agree_seconds: float = Field(
        0.1,
        gt=0.0,
        description="a busy replica agrees with the group (a barrier: the faster waits for the slower) at most this "
        "often; a sync or checkpoint may come this much later than due",
    )
    timeout_seconds: float = Field(
        60.0, gt=0.0, description="a replica that cannot reach its group, or waits this long for a peer, exits with code 1"
    )
    backend: Literal["auto", "gloo", "nccl"] = Field(
        "auto", description="auto: NCCL for the weights when runtime.device resolves to cuda (every replica), else gloo"
    )


class Settings(BaseSettings):
    """All of plasticd's configuration."""

    model_config = SettingsConfigDict(
        env_prefix="PLASTICD_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        validate_default=True,
    )

    model: ModelSettings = ModelSettings()
    train: TrainSettings = TrainSettings()
    plasticity: PlasticitySettings = PlasticitySettings()
    growth: GrowthSettings = GrowthSettings()
    drift: DriftSettings = DriftSettings()
    merge: MergeSettings = MergeSettings()
    replay: ReplaySettings = ReplaySettings()
    runtime: RuntimeSettings = RuntimeSettings()
    paths: PathSettings = PathSettings()
    daemon: DaemonSettings = DaemonSettings()
    checkpoint: CheckpointSettings = CheckpointSettings()
    limits: LimitSettings = LimitSettings()
    log: LogSettings = LogSettings()
    metrics: MetricsSettings = MetricsSettings()
    replicas: ReplicaSettings = ReplicaSettings()
    evolution: EvolutionSettings = EvolutionSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_file = _TOML_FILE.get()
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)


def _format_validation_error(err: ValidationError, origin: str) -> str:
    lines = [f"invalid settings ({origin}):"]
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "(root)"
        got = e.get("input")
        shown = "" if isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"  {field}: {e['msg']}{shown}")
    return "\n".join(lines)


ENV_PREFIX = "PLASTICD_"
CONFIG_ENV = "PLASTICD_CONFIG"
_NOT_SETTINGS = {CONFIG_ENV, "PLASTICD_TEST_DATASET"}  # PLASTICD_* variables that are not settings


def config_file_from_env(environ: Mapping[str, str] | None = None) -> Path | None:
    """The config file named by ``$PLASTICD_CONFIG``, or None.

    A leading ``-`` makes it optional, as in systemd's ``EnvironmentFile=-``:
    ``PLASTICD_CONFIG=-/etc/plasticd/plasticd.toml`` is used when the file
    exists and ignored when it does not. Without the dash a missing file is an
    error (``load_settings`` says so), as it is with ``--config``.
    """
    value = (os.environ if environ is None else environ).get(CONFIG_ENV, "")
    if not value:
        return None
    if value.startswith("-"):
        path = Path(value[1:])
        return path if path.exists() else None
    return Path(value)


def check_environment(environ: Mapping[str, str] | None = None) -> None:
    """Refuse PLASTICD_* variables that name no setting: a misspelled section would otherwise be ignored silently."""
    environ = os.environ if environ is None else environ
    sections = Settings.model_fields
    for key in sorted(environ):
        if not key.upper().startswith(ENV_PREFIX) or key.upper() in _NOT_SETTINGS:
            continue
        parts = key[len(ENV_PREFIX) :].lower().split("__")
        section = parts[0]
        hint = f"settings are {ENV_PREFIX}<SECTION>__<FIELD>; sections: {', '.join(sections)}"
        if section not in sections:
            raise ConfigError(f"environment variable {key}: there is no settings section {section!r} ({hint})")
        annotation = sections[section].annotation
        fields = annotation.model_fields if isinstance(annotation, type) and issubclass(annotation, BaseModel) else {}
        if len(parts) == 2 and (section, parts[1]) in RETIRED:
            raise ConfigError(f"environment variable {key}: {section}.{parts[1]} was retired: {RETIRED[section, parts[1]]}")
        if len(parts) > 2 or (len(parts) == 2 and parts[1] not in fields):
            raise ConfigError(
                f"environment variable {key}: section [{section}] has no field {'__'.join(parts[1:])!r} "
                f"(fields: {', '.join(fields)}; 'plasticd config' lists them)"
            )


def _env_parse_error(err: SettingsError, environ: Mapping[str, str]) -> ConfigError:
    """pydantic-settings' 'error parsing value for field "train"' made concrete: which variables, and the syntax."""
    match = str(err).split('"')
    section = match[1] if len(match) > 2 else ""
    names = [f"{k}={v!r}" for k, v in sorted(environ.items()) if k.upper().startswith(f"{ENV_PREFIX}{section.upper()}__")]
    where = ", ".join(names) or f"{ENV_PREFIX}{section.upper()}"
    return ConfigError(
        f"invalid settings (environment): cannot parse {where}: lists and tables are written as JSON, "
        f"e.g. {ENV_PREFIX}TRAIN__BETAS='[0.9, 0.999]'"
    )


def load_settings(config_file: Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Build Settings from defaults, an optional TOML file, the environment and overrides.

    Raises ConfigError naming every offending field (or environment variable).
    """
    check_environment()
    if config_file is not None:
        if not config_file.is_file():
            raise ConfigError(f"config file {config_file} does not exist or is not a file")
        try:
            tomllib.loads(config_file.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {config_file} is not valid TOML: {exc}") from exc
    origin = f"defaults < {config_file or 'no config file'} < PLASTICD_* env < flags"
    token = _TOML_FILE.set(config_file)
    try:
        return Settings(**(overrides or {}))
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, origin)) from None
    except SettingsError as err:
        raise _env_parse_error(err, os.environ) from None
    finally:
        _TOML_FILE.reset(token)
