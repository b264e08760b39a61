"""The sweep file: the search space over config keys and the sweep's settings (sampler, budget, pruning).

::

    sampler: tpe            # grid | random | tpe (Optuna's TPE)
    trials: 16              # budget: trials to run (grid: at most the grid's size, which is the default)
    concurrency: 2          # trials running at once
    seed: 0                 # the sampler's seed
    pruner:                 # median rule on the per-epoch valid monitor; `pruner: none` switches it off
      startup_trials: 4     # trials that must have completed before any trial is pruned
      min_epochs: 1         # a trial trains at least this many epochs before it can be pruned
    params:                 # any config key, as on the command line
      optimizer.dense.lr: {log_range: [1.0e-4, 1.0e-2]}
      model.dropout: {range: [0.0, 0.3], step: 0.1}
      features.embedding_dim: {choices: [8, 16, 32]}
      model.hidden_units: {choices: [[400, 400, 400], [200, 200]]}
      training.batch_size: {log_range: [512, 8192]}   # integer bounds: an integer parameter

``range``/``log_range`` with integer bounds (and step) give integers, otherwise floats; ``grid`` needs every
parameter finite (``choices``, or ``range`` with ``step``) and runs the points in the file's order (the product,
last key fastest).
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import optuna

from dlf_torchrec.config import ConfigError

Sampler = Literal["grid", "random", "tpe"]
SCALAR = (bool, int, float, str, type(None))
RESERVED_KEYS = ("training.output_dir",)  # each trial gets its own


@dataclass
class Param:
    """One searched config key."""

    key: str
    kind: Literal["choices", "range", "log_range"]
    choices: list[Any] = field(default_factory=list)
    low: float = 0.0
    high: float = 0.0
    step: float | None = None
    integer: bool = False

    @property
    def encoded(self) -> bool:
        """Choices that are not scalars (lists, mappings) are stored in Optuna as their JSON text."""
        return self.kind == "choices" and not all(isinstance(c, SCALAR) for c in self.choices)

    def distribution(self) -> optuna.distributions.BaseDistribution:
        if self.kind == "choices":
            return optuna.distributions.CategoricalDistribution(
                [json.dumps(c) for c in self.choices] if self.encoded else self.choices)
        log = self.kind == "log_range"
        if self.integer:
            return optuna.distributions.IntDistribution(int(self.low), int(self.high), log=log,
                                                        step=int(self.step or 1))
        return optuna.distributions.FloatDistribution(self.low, self.high, log=log, step=self.step)

    def grid(self) -> list[Any]:
        """The parameter's values in Optuna's form (encoded choices as JSON text)."""
        if self.kind == "choices":
            return [json.dumps(c) for c in self.choices] if self.encoded else list(self.choices)
        if self.step is None or self.kind == "log_range":
            raise ConfigError(f"params.{self.key}: the grid sampler needs choices or a range with a step")
        n = int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1
        values = [self.low + i * self.step for i in range(n)]
        return [int(v) for v in values] if self.integer else [round(v, 12) for v in values]

    def decode(self, value: Any) -> Any:
        """The config value of an Optuna parameter value."""
        return json.loads(value) if self.encoded else value


@dataclass
class SweepSpace:
    """A parsed sweep file."""

    params: list[Param]
    sampler: Sampler = "tpe"
    trials: int | None = None
    concurrency: int = 1
    seed: int = 0
    pruner: dict[str, int] | None = field(default_factory=lambda: {"startup_trials": 4, "min_epochs": 1})

    @property
    def budget(self) -> int:
        """Trials to run: ``trials``, capped at the grid's size for ``grid`` (its default)."""
        if self.sampler == "grid":
            size = math.prod(len(p.grid()) for p in self.params)
            return min(self.trials or size, size)
        if self.trials is None:
            raise ConfigError("trials: required for the random and tpe samplers")
        return self.trials

    def grid_points(self) -> list[dict[str, Any]]:
        """Every point of the grid in the file's order, as Optuna parameter values."""
        keys = [p.key for p in self.params]
        return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(p.grid() for p in self.params))]

    def sampler_object(self) -> optuna.samplers.BaseSampler:
        if self.sampler == "tpe":
            return optuna.samplers.TPESampler(seed=self.seed, constant_liar=True)
        return optuna.samplers.RandomSampler(seed=self.seed)  # grid: every trial is enqueued with its point

    def pruner_object(self) -> optuna.pruners.BasePruner:
        if not self.pruner:
            return optuna.pruners.NopPruner()
        return optuna.pruners.MedianPruner(n_startup_trials=self.pruner.get("startup_trials", 4),
                                           n_warmup_steps=self.pruner.get("min_epochs", 1))

    def suggest(self, trial: optuna.trial.BaseTrial) -> dict[str, Any]:
        """The trial's config values (key -> value), drawn through Optuna (or fixed by an enqueued grid point)."""
        out = {}
        for p in self.params:
            dist = p.distribution()
            if isinstance(dist, optuna.distributions.CategoricalDistribution):
                value = trial.suggest_categorical(p.key, dist.choices)
            elif isinstance(dist, optuna.distributions.IntDistribution):
                value = trial.suggest_int(p.key, dist.low, dist.high, step=dist.step, log=dist.log)
            else:
                value = trial.suggest_float(p.key, dist.low, dist.high, step=dist.step, log=dist.log)
            out[p.key] = p.decode(value)
        return out

    def config_values(self, optuna_params: dict[str, Any]) -> dict[str, Any]:
        """Config values of a finished trial's Optuna parameters."""
        return {p.key: p.decode(optuna_params[p.key]) for p in self.params if p.key in optuna_params}


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    return value


def parse_param(key: str, spec: Any) -> Param:
    where = f"params.{key}"
    if key in RESERVED_KEYS:
        raise ConfigError(f"{where}: set by the sweep for each trial, cannot be searched")
    if not isinstance(spec, dict) or len(set(spec) & {"choices", "range", "log_range"}) != 1:
        raise ConfigError(f"{where}: expected one of {{choices: [...]}}, {{range: [lo, hi]}} (optional step) or "
                          f"{{log_range: [lo, hi]}}, got {spec!r}")
    unknown = set(spec) - {"choices", "range", "log_range", "step"}
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
    if "choices" in spec:
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}.choices: expected a non-empty list, got {choices!r}")
        return Param(key, "choices", choices=choices)
    kind = "range" if "range" in spec else "log_range"
    bounds = spec[kind]
    if not isinstance(bounds, list) or len(bounds) != 2:
        raise ConfigError(f"{where}.{kind}: expected [low, high], got {bounds!r}")
    low, high = (_number(b, f"{where}.{kind}") for b in bounds)
    step = spec.get("step")
    if step is not None and (_number(step, f"{where}.step") <= 0 or kind == "log_range"):
        raise ConfigError(f"{where}.step: a positive step, for range only")
    if not low < high or (kind == "log_range" and low <= 0):
        raise ConfigError(f"{where}.{kind}: expected low < high{' and low > 0' if kind == 'log_range' else ''}")
    integer = all(isinstance(v, int) for v in (low, high, step if step is not None else 1))
    return Param(key, kind, low=low, high=high, step=step, integer=integer)


def parse_space(raw: Any, source: str = "<space>") -> SweepSpace:
    """Validate a sweep file's mapping into a :class:`SweepSpace`; errors name the file and key."""
    try:
        if not isinstance(raw, dict):
            raise ConfigError(f"top level must be a mapping, got {type(raw).__name__}")
        unknown = set(raw) - {"params", "sampler", "trials", "concurrency", "seed", "pruner"}
        if unknown:
            raise ConfigError(f"unknown keys {sorted(unknown)}")
        params_raw = raw.get("params")
        if not isinstance(params_raw, dict) or not params_raw:
            raise ConfigError("params: expected a mapping of config keys to search")
        space = SweepSpace([parse_param(str(k), v) for k, v in params_raw.items()])
        space.sampler = raw.get("sampler", "tpe")
        if space.sampler not in ("grid", "random", "tpe"):
            raise ConfigError(f"sampler: expected grid, random or tpe, got {space.sampler!r}")
        for key in ("trials", "concurrency", "seed"):
            value = raw.get(key, getattr(space, key))
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or (key != "seed" and value < 1)):
                raise ConfigError(f"{key}: expected a positive integer, got {value!r}")
            setattr(space, key, value)
        pruner = raw.get("pruner", space.pruner)
        if pruner in (None, "none", False):
            space.pruner = None
        elif isinstance(pruner, dict) and set(pruner) <= {"startup_trials", "min_epochs"} \
                and all(isinstance(v, int) and v >= 0 for v in pruner.values()):
            space.pruner = {"startup_trials": 4, "min_epochs": 1, **pruner}
        else:
            raise ConfigError(f"pruner: expected none or {{startup_trials: N, min_epochs: N}}, got {pruner!r}")
        space.budget  # noqa: B018 - validates the grid and the budget
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    return space


def yaml_value(value: Any) -> str:
    """``value`` as YAML flow text for a ``key=value`` override that reads back the same (floats keep a dot:
    PyYAML reads ``1e-05`` as a string)."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return ".nan" if math.isnan(value) else (".inf" if value > 0 else "-.inf")
        text = repr(value)
        if "e" in text and "." not in text.split("e")[0]:
            mantissa, exponent = text.split("e")
            text = f"{mantissa}.0e{exponent if exponent[0] in '+-' else '+' + exponent}"
        return text
    if isinstance(value, list | tuple):
        return "[" + ", ".join(yaml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))}: {yaml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str):
        return json.dumps(value)
    return str(value)


def overrides(values: dict[str, Any]) -> list[str]:
    """``key=value`` overrides of a trial's config values."""
    return [f"{k}={yaml_value(v)}" for k, v in values.items()]
