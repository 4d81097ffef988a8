"""The sweep config file: what grid to run, validated with pydantic before anything runs.

A sweep is TOML (or YAML) like::

    name = "smoke"
    models = ["tiny-random-llama"]
    budgets = [64, 128, "unlimited"]       # bits per message; "unlimited" = no cap
    seeds = [0]                            # first seed of each block of `episodes` episodes
    episodes = 8
    scripted = ["skyline"]                 # model-free reference rows: silent, oracle, skyline

    [[envs]]
    id = "lpca/SecretRelay-v0"
    levels = [0, 1]

    [[channels]]
    name = "none"
    budgets = ["unlimited"]                # overrides the sweep's budgets for this channel

    [[channels]]
    name = "activation-graft"
    options = { layer = 24 }
    vary = { control = ["none", "null", "shuffle", "random"] }   # one grid entry per value

Every key is checked: an unknown or mistyped one is an error naming it and the keys
allowed there.
"""

from __future__ import annotations

import itertools
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from lpca_envs.errors import LPCAError

UNLIMITED = "unlimited"


def _budget(v: Any) -> Any:
    if v == UNLIMITED or (isinstance(v, int) and not isinstance(v, bool) and v >= 0):
        return v
    raise ValueError(f"a budget is bits per message (an int >= 0) or {UNLIMITED!r}")


BudgetValue = Annotated[int | str, BeforeValidator(_budget)]


class SweepError(LPCAError, ValueError):
    """A sweep could not be set up or run (bad directory, failed cells, missing extra)."""


class SweepConfigError(SweepError):
    """A sweep config file is malformed or names something that does not exist."""


class WorkerDiedError(SweepError, RuntimeError):
    """A worker process or actor died mid-sweep (killed, out of memory); rerunning resumes."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class EnvSpec(_Strict):
    """One environment and the difficulty levels to sweep it at."""

    id: str
    """Registered env id, e.g. ``lpca/SecretRelay-v0`` (see `lpca envs`)."""
    levels: list[int] = Field(default_factory=lambda: [0], min_length=1)


class ChannelSpec(_Strict):
    """One channel of the grid, with fixed options and options to vary."""

    name: str
    """Registered channel name (see `lpca channels`)."""
    label: str | None = None
    """Name shown on the leaderboard (default: the channel name)."""
    options: dict[str, Any] = Field(default_factory=dict)
    """Channel options, the same for every grid entry of this channel."""
    vary: dict[str, list[Any]] = Field(default_factory=dict)
    """Option -> values: one grid entry per combination, e.g. ``{control = ["none", "null"]}``."""
    budgets: list[BudgetValue] | None = Field(None, min_length=1)
    """Bits per message for this channel (default: the sweep's `budgets`)."""
    rounds: int | None = Field(None, ge=0)
    """Message rounds (default: what the channel needs)."""
    budget_bits_per_episode: int | None = Field(None, ge=0)
    """Cap on all bits of an episode (default: none)."""
    cells: list[str] | None = Field(None, min_length=1)
    """Run this channel only on these task cells of the sweep's envs: ``"lpca/SecretRelay-v0"``
    (every level swept) or ``"lpca/SecretRelay-v0@1"`` (one level). Default: every cell."""

    @field_validator("budgets")
    @classmethod
    def _budgets(cls, v: list[BudgetValue] | None) -> list[BudgetValue] | None:
        return None if v is None else _check_budgets(v)

    @field_validator("cells")
    @classmethod
    def _cells(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        for c in v:
            env, _, level = c.partition("@")
            if not env or (_ and not level.isdigit()):
                raise ValueError(
                    f"cells entry {c!r}: expected an env id or 'env_id@level', e.g. 'lpca/SecretRelay-v0@1'"
                )
        if len(set(v)) != len(v):
            raise ValueError(f"cells repeat an entry: {v}")
        return v

    def runs_on(self, env_id: str, level: int) -> bool:
        """Whether this channel runs on the task cell (env_id, level)."""
        return self.cells is None or env_id in self.cells or f"{env_id}@{level}" in self.cells

    @field_validator("vary")
    @classmethod
    def _nonempty(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in v.items():
            if not values:
                raise ValueError(f"vary.{key} has no values; give at least one")
        return v

    def option_sets(self) -> list[dict[str, Any]]:
        """`options` merged with every combination of `vary`, in file order."""
        keys = list(self.vary)
        clash = sorted(set(keys) & set(self.options))
        if clash:
            raise SweepConfigError(
                f"channel {self.name!r}: option(s) {clash} are both in options and vary; keep one"
            )
        return [
            {**self.options, **dict(zip(keys, combo))}
            for combo in itertools.product(*(self.vary[k] for k in keys))
        ]


class SweepConfig(_Strict):
    """The whole grid: envs x levels x channels (x options) x budgets x models x seeds."""

    name: str = "sweep"
    """Name of the sweep (default output directory: ``sweeps/<name>``)."""
    out: str | None = None
    """Output directory, relative to the config file (overridden by ``--out``)."""
    envs: list[EnvSpec] = Field(min_length=1)
    channels: list[ChannelSpec] = Field(default_factory=list)
    budgets: list[BudgetValue] = Field(default_factory=lambda: [UNLIMITED], min_length=1)
    """Bits per message, for every channel that does not set its own."""
    models: list[str] = Field(default_factory=lambda: ["smollm2-135m"], min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    """First seed of each block: a cell runs seeds ``s .. s + episodes - 1`` for each s."""
    episodes: int = Field(20, ge=1)
    """Episodes per cell."""
    backend: Literal["torch", "mlx"] = "torch"
    batch_size: int = Field(8, ge=1)
    """Episodes per batched model call."""
    max_new_tokens: int = Field(24, ge=1)
    """Longest answer, in tokens."""
    scripted: list[Literal["silent", "oracle", "skyline"]] = Field(default_factory=list)
    """Model-free scripted teams run on the same episodes: floor, ceiling, skyline."""

    @field_validator("budgets")
    @classmethod
    def _budgets(cls, v: list[BudgetValue]) -> list[BudgetValue]:
        return _check_budgets(v)

    def model_post_init(self, _: Any) -> None:
        if not self.channels and not self.scripted:
            raise SweepConfigError("the sweep has no [[channels]] and no scripted teams: nothing to run")
        starts = sorted(self.seeds)
        for a, b in itertools.pairwise(starts):
            if b < a + self.episodes:
                raise SweepConfigError(
                    f"seeds: blocks starting at {a} and {b} overlap ({self.episodes} episodes each); "
                    f"start them at least {self.episodes} apart so no episode is run twice"
                )


def _check_budgets(v: list[BudgetValue]) -> list[BudgetValue]:
    if len(set(v)) != len(v):
        raise ValueError(f"budgets repeat a value: {v}")
    return v


def budget_bits(b: BudgetValue) -> int | None:
    """The runner's `budget_bits_per_message` for a config budget."""
    return None if b == UNLIMITED else int(b)


def parse_config(data: dict[str, Any], source: str = "config") -> SweepConfig:
    """Validate a parsed config mapping; every problem is reported with its key path."""
    if not isinstance(data, dict):
        raise SweepConfigError(f"{source}: expected a table of keys at the top, got {type(data).__name__}")
    try:
        return SweepConfig.model_validate(data)
    except ValidationError as e:
        raise SweepConfigError(f"{source}: " + format_errors(e)) from None
    except SweepConfigError as e:
        raise SweepConfigError(f"{source}: {e}") from None


def load_config(path: str | Path) -> SweepConfig:
    """Read and validate a sweep config (``.toml``; ``.yaml``/``.yml`` with PyYAML installed)."""
    p = Path(path)
    if not p.is_file():
        raise SweepConfigError(f"sweep config {str(p)!r} does not exist (expected a .toml or .yaml file)")
    text = p.read_text()
    if p.suffix == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise SweepConfigError(f"{p}: not valid TOML: {e}") from None
    elif p.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise SweepConfigError(f"{p}: YAML configs need PyYAML (pip install pyyaml)") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise SweepConfigError(f"{p}: not valid YAML: {e}") from None
    else:
        raise SweepConfigError(f"{p}: expected a .toml, .yaml or .yml file, got {p.suffix or 'no suffix'!r}")
    return parse_config(data, str(p))


def format_errors(e: ValidationError) -> str:
    """One line per problem: the key path, what was wrong, and for unknown keys the allowed ones."""
    lines = []
    for err in e.errors():
        loc = _path(err["loc"])
        if not loc:  # a whole-config check whose message names its key
            lines.append(err["msg"].removeprefix("Value error, "))
            continue
        if err["type"] == "extra_forbidden":
            allowed = ", ".join(_allowed_keys(err["loc"]))
            lines.append(f"{loc}: unknown key; allowed keys here: {allowed}")
        elif err["type"] == "missing":
            lines.append(f"{loc}: required key is missing")
        else:
            got = err.get("input")
            shown = "" if isinstance(got, dict) else f" (got {got!r})"
            msg = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
            lines.append(f"{loc}: {msg}{shown}")
    # a union (int | "unlimited") reports once per arm; keep one line per key path
    seen: dict[str, str] = {}
    for ln in lines:
        seen.setdefault(ln.split(":", 1)[0], ln)
    return "; ".join(seen.values())


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("int", "str") or "[" in str(part):
            continue  # union-arm and validator names pydantic adds to the path
        else:
            out += ("." if out else "") + str(part)
    return out


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    model: type[BaseModel] = SweepConfig
    for part in loc[:-1]:
        field = model.model_fields.get(str(part)) if isinstance(part, str) else None
        if field is not None:
            ann = field.annotation
            inner = getattr(ann, "__args__", (ann,))[0]
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                model = inner
    return list(model.model_fields)
