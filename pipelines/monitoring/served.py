"""Which version of each model users get, so drift is measured against what is served.

What users outside every experiment get is the router's experiment defaults
(services/router/experiments.yaml): a version, a version label of TF Serving's
models.config (`stable`), or nothing, and then the newest version the model server has
(the newest its models.config lets it load, or the newest in the repository without one).
Versions are read from the repository's directory names: the drift job fetches the model
cards, not the weights.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from libs import config as config_lib, feature_spec, model_config
from libs.experiments import ExperimentConfig
from pipelines.monitoring.windows import InputError

MODELS = (feature_spec.MODEL_NAMES.ranking, feature_spec.MODEL_NAMES.retrieval)


@dataclass(frozen=True)
class Served:
    model: str
    version: int
    path: Path  # the version's directory in the repository
    why: str


def _versions(base: Path) -> list[int]:
    return sorted(int(p.name) for p in base.glob("*") if p.name.isdigit() and p.is_dir())


def served_versions(workdir: Path, models_config: Path | None = None,
                    experiments: Path | None = None) -> dict[str, Served]:
    """Each served model's version (a model with no version is left out); InputError
    names what is missing or inconsistent."""
    try:
        sources = ({s.name: s for s in model_config.read_sources(models_config)}
                   if models_config else {})
        defaults = (config_lib.load(ExperimentConfig, experiments).defaults
                    if experiments else None)
    except (config_lib.ConfigError, OSError) as err:
        raise InputError(str(err)) from None
    served = {}
    for model in MODELS:
        base = workdir / "model_repo" / model
        source = sources.get(model)
        version = getattr(defaults, f"{model}_version", 0)
        label = getattr(defaults, f"{model}_version_label", "")
        if version:
            why = f"the router's defaults name {model} version {version}"
        elif label:
            if source is None or label not in source.labels:
                raise InputError(f"{experiments}: the defaults serve {model}'s label "
                                 f"{label!r}, which {models_config or 'no models.config'} "
                                 "does not assign (--models-config)")
            version = source.labels[label]
            why = (f"the router's defaults serve {model} label {label!r}, version {version} "
                   f"in {models_config}")
        else:
            on_disk = _versions(base)
            loadable = ([v for v in on_disk if v in source.versions]
                        if source is not None and source.policy == "specific" else on_disk)
            if not loadable:
                continue  # none served: its stage answers MODEL_NOT_SERVED
            version = loadable[-1]
            why = f"the newest {model} version the model server has ({base})"
        path = base / str(version)
        if not path.is_dir():
            raise InputError(f"{path}: {model} version {version} is served ({why}) but not "
                             "in the repository")
        served[model] = Served(model, version, path, why)
    return served
