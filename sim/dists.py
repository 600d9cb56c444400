"""Distribution specs from scenario files, as numpy samplers, and the value checks they share.

In TOML a bare number is a constant; a table picks a distribution by its ``dist`` key:
``{dist="exponential", mean=..}``, ``{dist="lognormal", median=.., p95=..}``,
``{dist="uniform", low=.., high=..}``, ``{dist="empirical", values=[..], weights=[..]}``,
and ``{dist="zipf", s=..}`` for host popularity only.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.errors import ScenarioError

Z95 = 1.6448536269514722
"""The standard normal 95th percentile: a lognormal's p95 is exp(mu + Z95 * sigma)."""


@dataclass(frozen=True, slots=True)
class Constant:
    """Always ``value``; written as a bare number in TOML."""

    value: float

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """``size`` copies of the value."""
        return np.full(size, self.value, dtype=np.float64)

    def mean(self) -> float:
        """The value."""
        return self.value

    def to_spec(self) -> float:
        """The TOML form: the bare number."""
        return self.value


@dataclass(frozen=True, slots=True)
class Exponential:
    """Exponential with the given mean (memoryless waits and watch times)."""

    mean_value: float

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """``size`` draws."""
        return rng.exponential(self.mean_value, size)

    def mean(self) -> float:
        """The mean."""
        return self.mean_value

    def to_spec(self) -> dict[str, Any]:
        """The TOML form."""
        return {"dist": "exponential", "mean": self.mean_value}


@dataclass(frozen=True, slots=True)
class Lognormal:
    """Lognormal given by its median and 95th percentile (heavy right tail: RTTs, bandwidth)."""

    median: float
    p95: float

    @property
    def mu(self) -> float:
        """Location of the underlying normal."""
        return math.log(self.median)

    @property
    def sigma(self) -> float:
        """Scale of the underlying normal."""
        return (math.log(self.p95) - self.mu) / Z95

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """``size`` draws."""
        return rng.lognormal(self.mu, self.sigma, size)

    def mean(self) -> float:
        """exp(mu + sigma^2 / 2)."""
        return math.exp(self.mu + self.sigma**2 / 2.0)

    def to_spec(self) -> dict[str, Any]:
        """The TOML form."""
        return {"dist": "lognormal", "median": self.median, "p95": self.p95}


@dataclass(frozen=True, slots=True)
class Uniform:
    """Uniform on [low, high)."""

    low: float
    high: float

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """``size`` draws."""
        return rng.uniform(self.low, self.high, size)

    def mean(self) -> float:
        """The midpoint."""
        return (self.low + self.high) / 2.0

    def to_spec(self) -> dict[str, Any]:
        """The TOML form."""
        return {"dist": "uniform", "low": self.low, "high": self.high}


@dataclass(frozen=True, slots=True)
class Empirical:
    """One of ``values``, drawn with probability proportional to ``weights``."""

    values: tuple[float, ...]
    weights: tuple[float, ...]

    def probabilities(self) -> np.ndarray:
        """The weights normalised to sum to 1."""
        w = np.asarray(self.weights, dtype=np.float64)
        return w / w.sum()

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """``size`` draws."""
        values = np.asarray(self.values, dtype=np.float64)
        return rng.choice(values, size=size, p=self.probabilities())

    def mean(self) -> float:
        """The weighted mean."""
        return float(np.dot(self.probabilities(), np.asarray(self.values, dtype=np.float64)))

    def to_spec(self) -> dict[str, Any]:
        """The TOML form."""
        return {"dist": "empirical", "values": list(self.values), "weights": list(self.weights)}


@dataclass(frozen=True, slots=True)
class Zipf:
    """Popularity by rank: rank k gets weight 1/k**s (s = 0 is uniform). Not a sampler."""

    s: float

    def weights(self, n: int) -> np.ndarray:
        """Normalised weights of ranks 1..n, most popular first."""
        if n < 1:
            raise ValueError(f"Zipf.weights needs n >= 1; given {n}")
        w = np.arange(1, n + 1, dtype=np.float64) ** -self.s
        return w / w.sum()

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """Zipf has no values to draw; use weights(n)."""
        raise TypeError("Zipf is a popularity law, not a sampler; use Zipf.weights(n)")

    def mean(self) -> float:
        """Zipf has no mean without a number of ranks; use weights(n)."""
        raise TypeError("Zipf is a popularity law with no mean; use Zipf.weights(n)")

    def to_spec(self) -> dict[str, Any]:
        """The TOML form."""
        return {"dist": "zipf", "s": self.s}


Dist = Constant | Exponential | Lognormal | Uniform | Empirical
"""A distribution of values (everything but Zipf)."""

DIST_KEYS: dict[str, tuple[str, ...]] = {
    "exponential": ("mean",),
    "lognormal": ("median", "p95"),
    "uniform": ("low", "high"),
    "empirical": ("values", "weights"),
    "zipf": ("s",),
}
"""The parameters each ``dist`` name takes (empirical ``weights`` is optional)."""

_VALUE_KINDS = ("exponential", "lognormal", "uniform", "empirical")
_VALUE_DISTS = "a bare number (constant), exponential, lognormal, uniform or empirical"


def show_value(value: object) -> str:
    """A short, one-line rendering of a given value for error messages (TOML spelling)."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int | float):
        text = repr(value)
    elif isinstance(value, str | list | tuple | dict):
        text = json.dumps(value, default=str, ensure_ascii=False)
    elif value is None:
        text = "nothing"
    else:
        text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def close_match(given: str, accepted: Iterable[str]) -> str | None:
    """The accepted name closest to a misspelt one, if any is close."""
    close = difflib.get_close_matches(given, list(accepted), n=1, cutoff=0.6)
    return close[0] if close else None


def did_you_mean(given: str, accepted: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for a close match, else ``"; accepted: a, b, c"``."""
    options = list(accepted)
    match = close_match(given, options)
    if match is not None:
        return f"; did you mean {match!r}?"
    return "; accepted: " + ", ".join(options) if options else ""


def check_keys(table: Mapping[Any, Any], accepted: Iterable[str], path: str, label: str) -> None:
    """Reject any key of ``table`` not in ``accepted``, naming it and a near miss."""
    options = list(accepted)
    for key in table:
        if key not in options:
            name = str(key)
            where = f"{path}.{name}" if path else name
            hint = did_you_mean(name, options)
            raise ScenarioError(where, f"unknown key {name!r} in {label}{hint}")


def format_number(x: float) -> str:
    """A number as a person would write it: 1000000000, 0.333, 1e-06."""
    if float(x).is_integer() and abs(x) < 1e16:
        return str(int(x))
    return repr(float(x))


def _range_text(
    minimum: float | None, maximum: float | None, exclusive_min: bool, exclusive_max: bool
) -> str:
    parts = []
    if minimum is not None:
        parts.append(f"{'>' if exclusive_min else '>='} {format_number(minimum)}")
    if maximum is not None:
        parts.append(f"{'<' if exclusive_max else '<='} {format_number(maximum)}")
    return " " + " and ".join(parts) if parts else ""


def _in_range(
    x: float,
    minimum: float | None,
    maximum: float | None,
    exclusive_min: bool,
    exclusive_max: bool,
) -> bool:
    if minimum is not None and (x <= minimum if exclusive_min else x < minimum):
        return False
    return maximum is None or (x < maximum if exclusive_max else x <= maximum)


def _finite(value: object) -> float | None:
    """The value as a finite float if it is an int or float (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        x = float(value)
    except OverflowError:
        return None
    return x if math.isfinite(x) else None


def require_number(
    value: object,
    path: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_min: bool = False,
    exclusive_max: bool = False,
) -> float:
    """A finite int or float (never a bool or string) within the bounds, as a float."""
    x = _finite(value)
    if x is not None and _in_range(x, minimum, maximum, exclusive_min, exclusive_max):
        return x
    bounds = _range_text(minimum, maximum, exclusive_min, exclusive_max)
    raise ScenarioError(path, f"must be a number{bounds}; given {show_value(value)}")


def require_integer(
    value: object,
    path: str,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int:
    """An int, or an integral float such as 2e6, within the bounds (never a bool or string)."""
    x = _finite(value)
    if x is not None and x.is_integer():
        whole = value if isinstance(value, int) else int(x)
        if _in_range(whole, minimum, maximum, False, False):
            return whole
    bounds = _range_text(minimum, maximum, False, False)
    raise ScenarioError(path, f"must be an integer{bounds}; given {show_value(value)}")


def _param(table: Mapping[str, Any], key: str, path: str, kind: str) -> object:
    if key not in table:
        raise ScenarioError(f"{path}.{key}", f"missing required key '{key}' for dist '{kind}'")
    return table[key]


def _dist_table(value: Mapping[str, Any], path: str, kinds: Sequence[str]) -> str:
    """The ``dist`` name of a distribution table, after checking it is one of ``kinds``."""
    if "dist" not in value:
        raise ScenarioError(
            f"{path}.dist", f"missing required key 'dist' (one of {', '.join(kinds)})"
        )
    kind = value["dist"]
    if kind == "zipf" and "zipf" not in kinds:
        raise ScenarioError(
            f"{path}.dist", f"zipf is for hosts.popularity only; use {_VALUE_DISTS} here"
        )
    if not isinstance(kind, str) or kind not in kinds:
        match = close_match(kind, kinds) if isinstance(kind, str) else None
        hint = f"; did you mean {match!r}?" if match else ""
        raise ScenarioError(
            f"{path}.dist",
            f"must be one of {', '.join(kinds)}; given {show_value(kind)}{hint}",
        )
    check_keys(value, ("dist", *DIST_KEYS[kind]), path, f'{{dist="{kind}"}}')
    return kind


def _number_list(value: object, path: str, minimum: float, exclusive: bool) -> tuple[float, ...]:
    if not isinstance(value, list | tuple) or not value:
        raise ScenarioError(
            path, f"must be a non-empty array of numbers; given {show_value(value)}"
        )
    return tuple(
        require_number(v, f"{path}.{i}", minimum=minimum, exclusive_min=exclusive)
        for i, v in enumerate(value)
    )


def parse_dist(value: object, path: str, *, minimum: float = 0.0, exclusive: bool = False) -> Dist:
    """A distribution from its TOML form; every value it can take is >= minimum (> if exclusive).

    Raises ScenarioError naming ``path`` (and the parameter) on anything else.
    """
    if not isinstance(value, Mapping):
        if isinstance(value, int | float) and not isinstance(value, bool):
            return Constant(require_number(value, path, minimum=minimum, exclusive_min=exclusive))
        raise ScenarioError(
            path,
            f'must be {_VALUE_DISTS} (a table like {{dist="exponential", mean=60}}); '
            f"given {show_value(value)}",
        )
    table = value
    kind = _dist_table(table, path, _VALUE_KINDS)
    if kind in ("exponential", "lognormal") and minimum > 0.0:
        raise ScenarioError(
            f"{path}.dist",
            f"{kind} takes values near 0, but values here must be"
            f"{_range_text(minimum, None, exclusive, False)}; use uniform or empirical",
        )
    if kind == "exponential":
        mean = _param(table, "mean", path, kind)
        return Exponential(require_number(mean, f"{path}.mean", minimum=0.0, exclusive_min=True))
    if kind == "lognormal":
        median = require_number(
            _param(table, "median", path, kind), f"{path}.median", minimum=0.0, exclusive_min=True
        )
        p95 = require_number(
            _param(table, "p95", path, kind), f"{path}.p95", minimum=median, exclusive_min=True
        )
        return Lognormal(median, p95)
    if kind == "uniform":
        low = require_number(
            _param(table, "low", path, kind),
            f"{path}.low",
            minimum=minimum,
            exclusive_min=exclusive,
        )
        high = require_number(_param(table, "high", path, kind), f"{path}.high", minimum=low)
        return Uniform(low, high)
    values = _number_list(_param(table, "values", path, kind), f"{path}.values", minimum, exclusive)
    if "weights" not in table:
        return Empirical(values, (1.0,) * len(values))
    weights = _number_list(table["weights"], f"{path}.weights", 0.0, False)
    if len(weights) != len(values):
        raise ScenarioError(
            f"{path}.weights",
            f"must have one weight per value ({len(values)} values); given {len(weights)} weights",
        )
    if not 0.0 < math.fsum(weights) < math.inf:
        raise ScenarioError(
            f"{path}.weights", f"must have a finite sum > 0; given {show_value(list(weights))}"
        )
    return Empirical(values, weights)


def parse_popularity(value: object, path: str) -> Zipf:
    """A Zipf popularity law from ``{dist="zipf", s=..}`` (s >= 0; 0 is uniform)."""
    if not isinstance(value, Mapping):
        raise ScenarioError(
            path, f'must be a table {{dist="zipf", s=1.1}}; given {show_value(value)}'
        )
    kind = _dist_table(value, path, ("zipf",))
    return Zipf(require_number(_param(value, "s", path, kind), f"{path}.s", minimum=0.0))
