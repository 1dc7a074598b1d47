"""Declarative search spaces over the flat hyperparameter keys.

A :class:`SearchSpace` is an ordered mapping ``key -> parameter``. Its serialised form (YAML or
JSON) is a flat mapping from hyperparameter key to one of::

    optim.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}   # optional step
    optim.batch_size: {type: int, low: 16, high: 128, log: true}
    relax.projection: {type: categorical, choices: [orthogonal, drop]}
    relax.schedule: triangular                                       # fixed (plain scalar)
    relax.theta: {type: fixed, value: 0.1, when: {relax.schedule: [constant]}}

``type`` may be left out when the other fields say it (``choices`` → categorical, ``value`` →
fixed, ``low``/``high`` → int or float from the key's default); a YAML list is shorthand for
a categorical. ``when: {KEY: [VALUES]}`` makes a parameter conditional: it is sampled only when
every named (earlier, categorical or fixed) parameter was active and took one of the values;
otherwise the key keeps its default.

Optuna is imported only by the methods that need it, so importing this module stays cheap.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar

import yaml

from search_spaces._defaults import (
    check_key,
    coerce_value,
    default_hparams,
    is_choice_key,
    is_integer_key,
)
from search_spaces._document import check_tree, load_document
from search_spaces._errors import SpecError

if TYPE_CHECKING:
    import optuna
    from optuna.distributions import BaseDistribution

#: ``((key, (value, ...)), ...)``: all pairs must hold for the parameter to be active.
Condition = tuple[tuple[str, tuple[Any, ...]], ...]

PARAM_TYPES: tuple[str, ...] = ("float", "int", "categorical", "fixed")


@dataclass(frozen=True)
class FloatParam:
    """A real-valued range ``[low, high]``, log-uniform when ``log``, on a grid when ``step``."""

    low: float
    high: float
    log: bool = False
    step: float | None = None
    when: Condition = ()
    kind: ClassVar[str] = "float"
    _fields: ClassVar[tuple[str, ...]] = ("low", "high", "log", "step")

    def _checked(self, key: str, field: str) -> FloatParam:
        if is_integer_key(key) or is_choice_key(key):
            raise SpecError(f"{field}.type", f"{key} cannot be a float range; {_kinds_for(key)}")
        low = coerce_value(key, self.low, f"{field}.low")
        high = coerce_value(key, self.high, f"{field}.high")
        log = _check_bool(self.log, f"{field}.log")
        if low >= high:
            raise SpecError(f"{field}.low", f"low ({low!r}) must be below high ({high!r})")
        if log and low <= 0:
            raise SpecError(f"{field}.low", f"a log range needs low > 0, got {low!r}")
        step = None
        if self.step is not None:
            step = self.step
            if (
                isinstance(step, bool)
                or not isinstance(step, (int, float))
                or not 0 < step <= high - low
            ):
                raise SpecError(f"{field}.step", f"step must be in (0, high - low], got {step!r}")
            if log:
                raise SpecError(f"{field}.step", "step cannot be combined with log: true")
        return replace(
            self, low=low, high=high, log=log, step=None if step is None else float(step)
        )

    def distribution(self) -> BaseDistribution:
        """The Optuna distribution this parameter samples from."""
        from optuna.distributions import FloatDistribution

        return FloatDistribution(self.low, self.high, log=self.log, step=self.step)

    def sample(self, trial: optuna.Trial, name: str) -> float:
        """Draw a value for ``name`` from ``trial``."""
        return trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)

    def draw(self, rng: random.Random) -> float:
        """A value drawn with ``rng`` (log-uniform when ``log``, on the grid when ``step``)."""
        if self.log:
            return min(
                self.high,
                max(self.low, math.exp(rng.uniform(math.log(self.low), math.log(self.high)))),
            )
        if self.step is not None:
            count = int(math.floor((self.high - self.low) / self.step + 1e-9))
            return self.low + rng.randint(0, count) * self.step
        return rng.uniform(self.low, self.high)

    def central(self, default: Any) -> float:
        """The default if it lies in the range (snapped to the grid), else the range's middle."""
        if self.low <= default <= self.high:
            value = float(default)
        elif self.log:
            value = math.sqrt(self.low * self.high)
        else:
            value = (self.low + self.high) / 2
        if self.step is not None:
            value = self.low + round((value - self.low) / self.step) * self.step
            value = min(max(value, self.low), self.high)
        return value

    def to_dict(self) -> dict[str, Any]:
        """Canonical serialised form."""
        out: dict[str, Any] = {"type": "float", "low": self.low, "high": self.high, "log": self.log}
        if self.step is not None:
            out["step"] = self.step
        return out


@dataclass(frozen=True)
class IntParam:
    """An integer range ``[low, high]``, log-uniform when ``log``, every ``step``-th value."""

    low: int
    high: int
    log: bool = False
    step: int = 1
    when: Condition = ()
    kind: ClassVar[str] = "int"
    _fields: ClassVar[tuple[str, ...]] = ("low", "high", "log", "step")

    def _checked(self, key: str, field: str) -> IntParam:
        if not is_integer_key(key):
            raise SpecError(f"{field}.type", f"{key} cannot be an int range; {_kinds_for(key)}")
        low = coerce_value(key, self.low, f"{field}.low")
        high = coerce_value(key, self.high, f"{field}.high")
        log = _check_bool(self.log, f"{field}.log")
        if low >= high:
            raise SpecError(f"{field}.low", f"low ({low!r}) must be below high ({high!r})")
        if log and low < 1:
            raise SpecError(f"{field}.low", f"a log integer range needs low >= 1, got {low!r}")
        step = self.step
        if isinstance(step, bool) or not isinstance(step, int) or step < 1 or step > high - low:
            raise SpecError(
                f"{field}.step", f"step must be an integer in [1, high - low], got {step!r}"
            )
        if log and step != 1:
            raise SpecError(f"{field}.step", "step cannot be combined with log: true")
        return replace(self, low=low, high=high, log=log, step=step)

    def distribution(self) -> BaseDistribution:
        """The Optuna distribution this parameter samples from."""
        from optuna.distributions import IntDistribution

        return IntDistribution(self.low, self.high, log=self.log, step=self.step)

    def sample(self, trial: optuna.Trial, name: str) -> int:
        """Draw a value for ``name`` from ``trial``."""
        return trial.suggest_int(name, self.low, self.high, step=self.step, log=self.log)

    def draw(self, rng: random.Random) -> int:
        """A value drawn with ``rng`` (log-uniform when ``log``)."""
        if self.log:
            value = math.exp(rng.uniform(math.log(self.low), math.log(self.high + 1)))
            return min(self.high, max(self.low, int(value)))
        return self.low + rng.randint(0, (self.high - self.low) // self.step) * self.step

    def central(self, default: Any) -> int:
        """The default if it is on the range's grid, else the grid point nearest the middle."""
        if self.low <= default <= self.high and (default - self.low) % self.step == 0:
            return int(default)
        middle = math.sqrt(self.low * self.high) if self.log else (self.low + self.high) / 2
        return self.low + round((middle - self.low) / self.step) * self.step

    def to_dict(self) -> dict[str, Any]:
        """Canonical serialised form."""
        out: dict[str, Any] = {"type": "int", "low": self.low, "high": self.high, "log": self.log}
        if self.step != 1:
            out["step"] = self.step
        return out


@dataclass(frozen=True)
class CategoricalParam:
    """One of a list of ``choices`` (text for closed-set keys, numbers otherwise)."""

    choices: tuple[Any, ...]
    when: Condition = ()
    kind: ClassVar[str] = "categorical"
    _fields: ClassVar[tuple[str, ...]] = ("choices",)

    def _checked(self, key: str, field: str) -> CategoricalParam:
        raw = self.choices
        if isinstance(raw, (str, bytes)) or not isinstance(raw, (list, tuple)) or not raw:
            raise SpecError(f"{field}.choices", f"choices must be a non-empty list, got {raw!r}")
        choices: list[Any] = []
        for index, value in enumerate(raw):
            coerced = coerce_value(key, value, f"{field}.choices.{index}")
            if coerced in choices:
                raise SpecError(f"{field}.choices.{index}", f"duplicate choice {coerced!r}")
            choices.append(coerced)
        return replace(self, choices=tuple(choices))

    def distribution(self) -> BaseDistribution:
        """The Optuna distribution this parameter samples from."""
        from optuna.distributions import CategoricalDistribution

        return CategoricalDistribution(list(self.choices))

    def sample(self, trial: optuna.Trial, name: str) -> Any:
        """Draw a value for ``name`` from ``trial``."""
        return trial.suggest_categorical(name, list(self.choices))

    def draw(self, rng: random.Random) -> Any:
        """A choice drawn uniformly with ``rng``."""
        return rng.choice(self.choices)

    def central(self, default: Any) -> Any:
        """The default if it is a choice, else the first choice."""
        return default if default in self.choices else self.choices[0]

    def to_dict(self) -> dict[str, Any]:
        """Canonical serialised form."""
        return {"type": "categorical", "choices": list(self.choices)}


@dataclass(frozen=True)
class FixedParam:
    """A constant: not searched, but set (when active) in every trial."""

    value: Any
    when: Condition = ()
    kind: ClassVar[str] = "fixed"
    _fields: ClassVar[tuple[str, ...]] = ("value",)

    def _checked(self, key: str, field: str) -> FixedParam:
        # A bare scalar has no ".value" in the document; name the key itself then.
        where = f"{field}.value" if self.when else field
        return replace(self, value=coerce_value(key, self.value, where))

    def sample(self, trial: optuna.Trial, name: str) -> Any:
        """Return the constant (nothing is asked of ``trial``)."""
        return self.value

    def draw(self, rng: random.Random) -> Any:
        """Return the constant."""
        return self.value

    def central(self, default: Any) -> Any:
        """Return the constant."""
        return self.value

    def to_dict(self) -> Any:
        """Canonical serialised form: the plain value unless the parameter is conditional."""
        return {"type": "fixed", "value": self.value} if self.when else self.value


Param = FloatParam | IntParam | CategoricalParam | FixedParam

_PARAM_CLASSES: dict[str, type[Param]] = {
    "float": FloatParam,
    "int": IntParam,
    "categorical": CategoricalParam,
    "fixed": FixedParam,
}


def _kinds_for(key: str) -> str:
    if is_choice_key(key):
        return "use categorical or fixed"
    if is_integer_key(key):
        return "use int, categorical or fixed"
    return "use float, categorical or fixed"


def _check_bool(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise SpecError(field, f"must be true or false, got {value!r}")
    return value


def parse_param(key: str, raw: Any, field: str) -> Param:
    """Build one parameter from its serialised form (see the module docstring).

    Only the structure is checked here (known fields, a known type); values are checked
    against ``key`` when a :class:`SearchSpace` is built from the result.
    """
    if raw is None:
        raise SpecError(field, "a parameter cannot be null; give a value or a range")
    if isinstance(raw, (list, tuple)):
        return CategoricalParam(choices=tuple(raw))
    if not isinstance(raw, Mapping):
        return FixedParam(value=raw)
    for name in raw:
        if not isinstance(name, str):
            raise SpecError(field, f"field names must be text, got {name!r}")
    kind = raw.get("type")
    if kind is None:
        if "choices" in raw:
            kind = "categorical"
        elif "value" in raw:
            kind = "fixed"
        elif "low" in raw or "high" in raw:
            kind = "int" if is_integer_key(key) else "float"
        else:
            raise SpecError(
                field, "cannot tell the parameter type; give type: float, int, categorical or fixed"
            )
    if not isinstance(kind, str) or kind not in _PARAM_CLASSES:  # (a list is unhashable)
        raise SpecError(
            f"{field}.type", f"unknown parameter type {kind!r}; allowed: {', '.join(PARAM_TYPES)}"
        )
    cls = _PARAM_CLASSES[kind]
    allowed = ("type", *cls._fields, "when")
    for name in raw:
        if name not in allowed:
            raise SpecError(
                f"{field}.{name}",
                f"unknown field {name!r} for a {kind} parameter; allowed: {', '.join(allowed)}",
            )
    required = {"float": ("low", "high"), "int": ("low", "high"), "categorical": ("choices",)}
    for name in required.get(kind, ("value",)):
        if name not in raw:
            raise SpecError(f"{field}.{name}", f"a {kind} parameter needs {name!r}")
    values = {name: raw[name] for name in cls._fields if name in raw}
    if kind == "categorical":
        choices = values["choices"]
        values["choices"] = tuple(choices) if isinstance(choices, list) else choices
    when = _parse_condition(raw["when"], f"{field}.when") if "when" in raw else ()
    return cls(**values, when=when)  # type: ignore[arg-type]


def _parse_condition(raw: Any, field: str) -> Condition:
    if not isinstance(raw, Mapping) or not raw:
        raise SpecError(field, "when must be a non-empty mapping {KEY: [VALUES]}")
    pairs = []
    for key, values in raw.items():
        path = f"{field}.{key}"
        check_key(key, path)
        listed = values if isinstance(values, (list, tuple)) else [values]
        if not listed:
            raise SpecError(path, "list at least one value")
        coerced = []
        for index, value in enumerate(listed):
            where = f"{path}.{index}" if isinstance(values, (list, tuple)) else path
            coerced.append(coerce_value(key, value, where))
        pairs.append((key, tuple(coerced)))
    return tuple(pairs)


def _when_to_dict(when: Condition) -> dict[str, list[Any]]:
    return {key: list(values) for key, values in when}


class SearchSpace:
    """An ordered, validated mapping from hyperparameter key to parameter.

    Guarantees, once built: every key is a hyperparameter key; every range, choice and fixed
    value is admissible for its key; every condition refers to an earlier categorical or
    fixed parameter. Invalid input raises :class:`SpecError` naming ``<path>.<key>...``.
    """

    def __init__(
        self,
        params: Mapping[str, Param] | Iterable[tuple[str, Param]],
        *,
        path: str = "search_space",
        fields: Mapping[str, str] | None = None,
    ) -> None:
        items = list(params.items()) if isinstance(params, Mapping) else list(params)
        fields = dict(fields or {})
        checked: dict[str, Param] = {}
        for key, param in items:
            field = fields.get(key, f"{path}.{key}")
            check_key(key, field)
            if key in checked:
                raise SpecError(field, f"{key} is given twice")
            if not isinstance(param, FloatParam | IntParam | CategoricalParam | FixedParam):
                raise SpecError(field, f"not a parameter: {param!r}")
            param = param._checked(key, field)
            self._check_condition(key, param.when, checked, f"{field}.when")
            checked[key] = param
        self._params = checked

    @staticmethod
    def _check_condition(
        key: str, when: Condition, earlier: Mapping[str, Param], field: str
    ) -> None:
        for ref, _values in when:
            path = f"{field}.{ref}"
            if ref == key:
                raise SpecError(path, f"{key} cannot be conditioned on itself")
            if ref not in earlier:
                raise SpecError(
                    path,
                    f"condition refers to {ref}, which is not a parameter defined before {key}",
                )
            if earlier[ref].kind not in ("categorical", "fixed"):
                raise SpecError(
                    path, f"condition refers to {ref}, which is not categorical or fixed"
                )

    # -- construction and serialisation -------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Any, path: str = "search_space") -> SearchSpace:
        """Build a space from its serialised mapping; errors name ``<path>.<key>...``."""
        if not isinstance(data, Mapping):
            raise SpecError(path, f"a search space must be a mapping of parameters, got {data!r}")
        check_tree(data, path)
        params = []
        for key, raw in data.items():
            field = f"{path}.{key}"
            check_key(key, field)
            params.append((key, parse_param(key, raw, field)))
        return cls(params, path=path)

    @classmethod
    def from_yaml(cls, text: str | bytes, path: str = "search_space") -> SearchSpace:
        """Build a space from YAML or JSON text (read with the safe spec reader)."""
        return cls.from_dict(load_document(text), path=path)

    def to_dict(self) -> dict[str, Any]:
        """Canonical JSON-able form; ``SearchSpace.from_dict(space.to_dict()) == space``."""
        out: dict[str, Any] = {}
        for key, param in self._params.items():
            entry = param.to_dict()
            if param.when:
                entry["when"] = _when_to_dict(param.when)
            out[key] = entry
        return out

    def to_yaml(self) -> str:
        """YAML text of :meth:`to_dict` (keys in space order)."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def merged(self, override: Mapping[str, Any], path: str = "search_space") -> SearchSpace:
        """Return this space with ``override``'s parameters replacing or adding to its own.

        A replaced key keeps its place (so conditions on it still refer backwards); new keys
        are appended; ``null`` removes a key (then it takes its default). Errors in an
        override entry are named ``<path>.override.<key>...``.
        """
        where = f"{path}.override"
        if not isinstance(override, Mapping):
            raise SpecError(where, f"override must be a mapping of parameters, got {override!r}")
        check_tree(override, where)
        params: dict[str, Param] = dict(self._params)
        fields: dict[str, str] = {}
        for key, raw in override.items():
            field = f"{where}.{key}"
            check_key(key, field)
            fields[key] = field
            if raw is None:
                params.pop(key, None)
                continue
            params[key] = parse_param(key, raw, field)
        # Conditions of untouched parameters may now point at a removed key: re-check all.
        return SearchSpace(params, path=path, fields=fields)

    def with_fixed(self, values: Mapping[str, Any], path: str = "set") -> SearchSpace:
        """Return this space with each key of ``values`` fixed (the ``--set`` overrides).

        A fixed key keeps its condition, if any, so it still applies only where it is used.
        """
        params: dict[str, Param] = dict(self._params)
        fields = {}
        for key, value in values.items():
            check_key(key, f"{path}.{key}")
            value = coerce_value(key, value, f"{path}.{key}")
            old = params.get(key)
            params[key] = FixedParam(value=value, when=old.when if old else ())
            fields[key] = f"{path}.{key}"
        return SearchSpace(params, fields=fields)

    # -- inspection ------------------------------------------------------------------------------

    @property
    def params(self) -> dict[str, Param]:
        """The parameters, in order (a copy)."""
        return dict(self._params)

    def __contains__(self, key: object) -> bool:
        return key in self._params

    def __len__(self) -> int:
        return len(self._params)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SearchSpace):
            return NotImplemented
        return list(self._params.items()) == list(other._params.items())

    def __hash__(self) -> int:
        return hash(tuple(self._params.items()))

    def __repr__(self) -> str:
        return f"SearchSpace({self.to_dict()!r})"

    def searched_keys(self) -> tuple[str, ...]:
        """Keys Optuna samples (everything but the fixed parameters)."""
        return tuple(k for k, p in self._params.items() if p.kind != "fixed")

    def is_active(self, key: str, values: Mapping[str, Any]) -> bool:
        """Whether ``key``'s conditions hold given the already active ``values``."""
        return all(
            ref in values and values[ref] in allowed for ref, allowed in self._params[key].when
        )

    # -- sampling --------------------------------------------------------------------------------

    def to_optuna_distributions(self) -> dict[str, BaseDistribution]:
        """Optuna distributions of every non-fixed parameter, conditional ones included."""
        return {
            key: param.distribution()
            for key, param in self._params.items()
            if not isinstance(param, FixedParam)
        }

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Sample a trial's hyperparameters define-by-run; return the FULL flat dict.

        Parameters are visited in order; a conditional parameter whose condition does not
        hold is not asked of ``trial`` at all (so Optuna records it as absent) and keeps its
        default. The result is ``default_hparams()`` updated with the fixed values and the
        samples.

        This is the ``space=`` callable for Ray Tune's ``OptunaSearch``. Ray wraps the trial to
        capture every ``suggest_*`` value and builds the config as
        ``{**captured, **returned}``; the sampled keys in the returned dict hold exactly the
        captured values, so the trial config is this same full dict (Ray then unflattens on
        ``"/"``, which leaves the dotted keys alone).
        """
        active: dict[str, Any] = {}
        for key, param in self._params.items():
            if self.is_active(key, active):
                active[key] = param.sample(trial, key)
        values = default_hparams()
        values.update(active)
        return values

    def sample_defaults(self) -> dict[str, Any]:
        """A deterministic point of the space (full flat dict), for smoke runs and previews.

        Each active parameter takes the key's default when the space allows it, else the
        middle of its range (geometric for log ranges) or its first choice.
        """
        defaults = default_hparams()
        active: dict[str, Any] = {}
        for key, param in self._params.items():
            if self.is_active(key, active):
                active[key] = param.central(defaults[key])
        defaults.update(active)
        return defaults

    def sample_random(self, seed: int = 0) -> dict[str, Any]:
        """A random point (full flat dict): uniform, or log-uniform for log ranges.

        Independent of Optuna (no study is created), reproducible for a given ``seed``.
        """
        rng = random.Random(seed)
        active: dict[str, Any] = {}
        for key, param in self._params.items():
            if self.is_active(key, active):
                active[key] = param.draw(rng)
        values = default_hparams()
        values.update(active)
        return values
