"""Hyperparameter search spaces as configured (`tuning_search_space` in pipeline.yaml).

Per model, each hyperparameter is searched over a list of `choices` or a numeric range
(`min`, `max`, optionally `step` and `log` sampling). Checked here without TensorFlow;
the hyperparameter names are checked against the models when a run starts
(models/tuning.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field

MODELS = ("retrieval", "ranking")


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass
class Dimension:
    """One hyperparameter's search range: `choices`, or `min` and `max`."""
    choices: list = field(default_factory=list)
    min: float | int | None = None
    max: float | int | None = None
    step: float | int | None = None
    log: bool = False  # sample evenly in log space (rates, regularization strengths)

    @property
    def integer(self) -> bool:
        """A range of integers (e.g. a layer width), not of floats."""
        return all(isinstance(v, int) and not isinstance(v, bool)
                   for v in (self.min, self.max, self.step) if v is not None)

    def check(self, where: str) -> None:
        """Raises ValueError naming `where` (the field) when the range is unusable."""
        if not isinstance(self.choices, list):
            raise ValueError(f"field '{where}.choices': must be a list, got {self.choices!r}")
        has_range = self.min is not None or self.max is not None
        if self.choices and has_range:
            raise ValueError(f"field '{where}': give either 'choices' or 'min'/'max', "
                             "not both")
        if self.choices:
            if self.step is not None or self.log:
                raise ValueError(f"field '{where}': 'step' and 'log' apply to a range, "
                                 "not to choices")
            kinds = {type(v) for v in self.choices}
            if len(kinds) > 1 and not all(_number(v) for v in self.choices):
                raise ValueError(f"field '{where}.choices': values must be of one type, "
                                 f"got {self.choices!r}")
            if len({repr(v) for v in self.choices}) != len(self.choices):
                raise ValueError(f"field '{where}.choices': duplicate values in "
                                 f"{self.choices!r}")
            return
        if self.min is None or self.max is None:
            raise ValueError(f"field '{where}': needs 'choices' (a non-empty list) or "
                             "both 'min' and 'max'")
        for name in ("min", "max", "step"):
            value = getattr(self, name)
            if value is not None and not _number(value):
                raise ValueError(f"field '{where}.{name}': must be a number, got {value!r}")
        if not self.min < self.max:
            raise ValueError(f"field '{where}': 'min' ({self.min}) must be below 'max' "
                             f"({self.max})")
        if self.step is not None and self.step <= 0:
            raise ValueError(f"field '{where}.step': must be positive, got {self.step}")
        if self.log and self.min <= 0:
            raise ValueError(f"field '{where}.min': log sampling needs min > 0, "
                             f"got {self.min}")
        if self.log and self.step is not None:
            raise ValueError(f"field '{where}': 'step' and 'log' cannot be combined")


SearchSpace = dict[str, dict[str, Dimension]]  # model -> hyperparameter -> dimension


def check(space: SearchSpace, field_name: str = "tuning_search_space") -> None:
    unknown = set(space) - set(MODELS)
    if unknown:
        raise ValueError(f"field '{field_name}': unknown model(s) {sorted(unknown)}; "
                         f"allowed: {', '.join(sorted(MODELS))}")
    for model, dimensions in space.items():
        for name, dimension in dimensions.items():
            dimension.check(f"{field_name}.{model}.{name}")
