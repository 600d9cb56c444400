"""Distribution specs: samplers match their stated shape, and specs round-trip through TOML."""

from __future__ import annotations

import math
import tomllib

import numpy as np
import pytest

from sim.dists import (
    Constant,
    Dist,
    Empirical,
    Exponential,
    Lognormal,
    Uniform,
    Zipf,
    parse_dist,
    parse_popularity,
    require_integer,
    require_number,
)
from sim.errors import ScenarioError

N = 200_000


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240611)


ALL_DISTS: list[Dist] = [
    Constant(7.5),
    Exponential(900.0),
    Lognormal(20.0, 80.0),
    Uniform(2.0, 5.0),
    Empirical((1.0, 10.0, 100.0), (0.7, 0.2, 0.1)),
]


@pytest.mark.parametrize("dist", ALL_DISTS, ids=lambda d: type(d).__name__)
def test_sample_is_float64_of_requested_size_and_its_mean_matches(
    dist: Dist, rng: np.random.Generator
) -> None:
    x = dist.sample(rng, N)
    assert x.shape == (N,)
    assert x.dtype == np.float64
    assert x.mean() == pytest.approx(dist.mean(), rel=0.02)


@pytest.mark.parametrize("dist", ALL_DISTS, ids=lambda d: type(d).__name__)
def test_same_seed_gives_same_samples(dist: Dist) -> None:
    a = dist.sample(np.random.default_rng(5), 1000)
    b = dist.sample(np.random.default_rng(5), 1000)
    assert np.array_equal(a, b)


@pytest.mark.parametrize("dist", [*ALL_DISTS, Zipf(1.1)], ids=lambda d: type(d).__name__)
def test_to_spec_round_trips_through_toml_and_parse(dist: Dist | Zipf) -> None:
    spec = dist.to_spec()
    text = "v = " + (repr(spec) if isinstance(spec, float) else _inline(spec))
    value = tomllib.loads(text)["v"]
    parsed = parse_popularity(value, "x") if isinstance(dist, Zipf) else parse_dist(value, "x")
    assert parsed == dist


def _inline(spec: dict[str, object]) -> str:
    def one(v: object) -> str:
        return f'"{v}"' if isinstance(v, str) else repr(v)

    return "{" + ", ".join(f"{k} = {one(v)}" for k, v in spec.items()) + "}"


def test_constant_is_always_its_value(rng: np.random.Generator) -> None:
    assert np.all(Constant(3.0).sample(rng, 100) == 3.0)
    assert Constant(3.0).mean() == 3.0


def test_exponential_stated_mean(rng: np.random.Generator) -> None:
    d = Exponential(60.0)
    x = d.sample(rng, N)
    assert d.mean() == 60.0
    assert np.median(x) == pytest.approx(60.0 * math.log(2), rel=0.02)
    assert x.min() >= 0.0


def test_lognormal_hits_its_median_and_p95(rng: np.random.Generator) -> None:
    d = Lognormal(median=25.0, p95=80.0)
    x = d.sample(rng, N)
    assert np.median(x) == pytest.approx(25.0, rel=0.02)
    assert np.quantile(x, 0.95) == pytest.approx(80.0, rel=0.03)
    assert d.mean() > d.median  # right-skewed


def test_uniform_stays_in_range_and_covers_it(rng: np.random.Generator) -> None:
    x = Uniform(2.0, 5.0).sample(rng, N)
    assert x.min() >= 2.0
    assert x.max() < 5.0
    assert x.min() < 2.01
    assert x.max() > 4.99


def test_empirical_respects_weights(rng: np.random.Generator) -> None:
    d = Empirical((1.0, 10.0, 100.0), (7.0, 2.0, 1.0))
    x = d.sample(rng, N)
    assert set(np.unique(x)) == {1.0, 10.0, 100.0}
    freq = [np.mean(x == v) for v in (1.0, 10.0, 100.0)]
    assert freq == pytest.approx([0.7, 0.2, 0.1], abs=0.01)
    assert d.mean() == pytest.approx(0.7 * 1 + 0.2 * 10 + 0.1 * 100)


def test_empirical_without_weights_is_equally_likely(rng: np.random.Generator) -> None:
    d = parse_dist({"dist": "empirical", "values": [1, 2, 3, 4]}, "x")
    assert d == Empirical((1.0, 2.0, 3.0, 4.0), (1.0, 1.0, 1.0, 1.0))
    x = d.sample(rng, N)
    assert [np.mean(x == v) for v in (1, 2, 3, 4)] == pytest.approx([0.25] * 4, abs=0.01)


def test_empirical_zero_weight_value_never_drawn(rng: np.random.Generator) -> None:
    d = parse_dist({"dist": "empirical", "values": [1, 2], "weights": [0, 3]}, "x")
    assert np.all(d.sample(rng, 1000) == 2.0)


@pytest.mark.parametrize("n", [1, 2, 10, 1000])
def test_zipf_weights_sum_to_one_and_decrease(n: int) -> None:
    w = Zipf(1.1).weights(n)
    assert w.shape == (n,)
    assert w.sum() == pytest.approx(1.0)
    assert np.all(np.diff(w) < 0)


def test_zipf_rank_ratio_and_uniform_at_zero() -> None:
    w = Zipf(2.0).weights(3)
    assert w[0] / w[1] == pytest.approx(4.0)
    assert Zipf(0.0).weights(4) == pytest.approx([0.25] * 4)


def test_zipf_is_not_a_sampler(rng: np.random.Generator) -> None:
    with pytest.raises(TypeError):
        Zipf(1.0).sample(rng, 3)


def test_bare_number_is_a_constant() -> None:
    assert parse_dist(5, "x") == Constant(5.0)
    assert parse_dist(0.5, "x") == Constant(0.5)


def test_error_names_the_parameter_and_given_value() -> None:
    with pytest.raises(ScenarioError) as err:
        parse_dist({"dist": "exponential", "mean": -3}, "audience.watch_s")
    assert str(err.value) == "audience.watch_s.mean: must be a number > 0; given -3"


def test_unknown_dist_name_lists_accepted_names() -> None:
    with pytest.raises(ScenarioError) as err:
        parse_dist({"dist": "gamma", "mean": 3}, "tier.edge.rtt_ms")
    msg = str(err.value)
    assert msg.startswith("tier.edge.rtt_ms.dist: ")
    for name in ("exponential", "lognormal", "uniform", "empirical", "gamma"):
        assert name in msg


def test_misspelt_dist_name_suggests_the_right_one() -> None:
    with pytest.raises(ScenarioError, match="did you mean 'lognormal'"):
        parse_dist({"dist": "lognormel", "median": 1, "p95": 2}, "x")


def test_unknown_key_inside_a_dist_table_suggests_the_right_one() -> None:
    with pytest.raises(ScenarioError) as err:
        parse_dist({"dist": "lognormal", "median": 1, "p59": 2}, "x")
    assert str(err.value).startswith("x.p59: unknown key 'p59'")
    assert "did you mean 'p95'?" in str(err.value)


@pytest.mark.parametrize(
    ("spec", "key"),
    [
        ({"dist": "lognormal", "median": 20, "p95": 20}, "p95"),
        ({"dist": "lognormal", "median": 20, "p95": 10}, "p95"),
        ({"dist": "lognormal", "median": 0, "p95": 10}, "median"),
        ({"dist": "uniform", "low": 5, "high": 2}, "high"),
        ({"dist": "uniform", "low": -1, "high": 2}, "low"),
        ({"dist": "empirical", "values": [1, 2], "weights": [1]}, "weights"),
        ({"dist": "empirical", "values": [1, 2], "weights": [1, -1]}, "weights"),
        ({"dist": "empirical", "values": [1, 2], "weights": [0, 0]}, "weights"),
        ({"dist": "empirical", "values": []}, "values"),
        ({"dist": "empirical", "values": [1, -2]}, "values"),
        ({"dist": "exponential"}, "mean"),
        ({"dist": "exponential", "mean": True}, "mean"),
        ({"dist": "exponential", "mean": "60"}, "mean"),
        ({"dist": "exponential", "mean": math.inf}, "mean"),
        ({"dist": "exponential", "mean": math.nan}, "mean"),
        ({"mean": 60}, "dist"),
        ({"dist": "zipf", "s": 1.0}, "zipf"),
        ("60", "x"),
        (True, "x"),
        (-1, "x"),
        ([1, 2], "x"),
    ],
)
def test_bad_specs_are_rejected_naming_the_key(spec: object, key: str) -> None:
    with pytest.raises(ScenarioError) as err:
        parse_dist(spec, "x")
    msg = str(err.value)
    assert key in msg
    assert "\n" not in msg


def test_exclusive_minimum_rejects_zero_constant_and_zero_values() -> None:
    assert parse_dist(0, "x") == Constant(0.0)
    with pytest.raises(ScenarioError, match="> 0"):
        parse_dist(0, "x", exclusive=True)
    with pytest.raises(ScenarioError, match=r"x\.values\.0"):
        parse_dist({"dist": "empirical", "values": [0, 1]}, "x", exclusive=True)


def test_positive_minimum_rejects_unbounded_below_dists() -> None:
    with pytest.raises(ScenarioError, match=r"x\.dist"):
        parse_dist({"dist": "exponential", "mean": 5}, "x", minimum=1.0)
    assert parse_dist({"dist": "uniform", "low": 1, "high": 2}, "x", minimum=1.0) == Uniform(
        1.0, 2.0
    )


def test_popularity_must_be_zipf() -> None:
    assert parse_popularity({"dist": "zipf", "s": 0}, "hosts.popularity") == Zipf(0.0)
    with pytest.raises(ScenarioError, match=r"hosts\.popularity"):
        parse_popularity(1.1, "hosts.popularity")
    with pytest.raises(ScenarioError, match=r"hosts\.popularity\.dist"):
        parse_popularity({"dist": "exponential", "mean": 1}, "hosts.popularity")
    with pytest.raises(ScenarioError, match=r"hosts\.popularity\.s"):
        parse_popularity({"dist": "zipf", "s": -1}, "hosts.popularity")


def test_integers_accept_integral_floats_but_not_bools_or_strings() -> None:
    assert require_integer(2e6, "k") == 2_000_000
    assert isinstance(require_integer(2e6, "k"), int)
    assert require_integer(10_000_000, "k") == 10_000_000
    for bad in (2.5, True, "3", math.inf, math.nan, None):
        with pytest.raises(ScenarioError, match="k: must be an integer"):
            require_integer(bad, "k")


def test_numbers_reject_bools_strings_and_non_finite() -> None:
    assert require_number(3, "k") == 3.0
    for bad in (True, False, "3", math.inf, -math.inf, math.nan, [3], {"v": 3}):
        with pytest.raises(ScenarioError, match="k: must be a number"):
            require_number(bad, "k")


def test_number_range_message_says_what_is_accepted() -> None:
    with pytest.raises(ScenarioError) as err:
        require_number(61, "stream.segment_s", minimum=0.0, exclusive_min=True, maximum=60.0)
    assert str(err.value) == "stream.segment_s: must be a number > 0 and <= 60; given 61"
