"""A model card in Markdown: what a model is, the data it came from, how
it scored overall, by slice and across user groups, and what it is (not) for."""
from __future__ import annotations

from pipelines.training.fairness import REASON_PREFIX

INTENDED_USE = {
    "retrieval": (
        "Proposes a few hundred candidate items per request from the whole catalog for "
        "the ranking model to order (the candidate service asks it for the top k and "
        "drops items the user has rated). Not meant to be shown to users unranked."),
    "ranking": (
        "Scores the retrieved candidates with a predicted rating (1-5) so the ranking "
        "service can order them. Its scores are for ordering one user's candidates, not "
        "calibrated ratings to show or to compare between users."),
}
LIMITATIONS = (
    "Trained on explicit ratings of one catalog (MovieLens-style data): it knows what "
    "rated users liked, not what they would watch; items and users absent from training "
    "fall back to shared embeddings.",
    "Evaluated offline on the split below; with the time split the eval ratings are the "
    "newest, so the figures estimate the next period, not any period.",
    "Fairness is measured across the only demographic attributes the data holds (gender, "
    "age group), each separately; intersections and groups below the minimum size are "
    "not gated, and the attributes are self-reported and binary (gender) in the source.",
    "The exposure figures describe what the model proposes on the eval split, not what "
    "users are finally shown after ranking, filters and fallbacks.",
)


def _number(value) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) >= 100:
        return f"{int(value):,}"
    return f"{value:,}" if isinstance(value, int) else f"{value:.4g}"


def _rows(table: dict[str, dict], columns: list[str]) -> list[str]:
    lines = ["| group | " + " | ".join(columns) + " |",
             "| --- |" + " --- |" * len(columns)]
    for group, values in table.items():
        cells = []
        for column in columns:
            value = values.get(column)
            cells.append("" if value is None else _number(value))
        lines.append(f"| {group} | " + " | ".join(cells) + " |")
    return lines


def _metrics(metrics: dict) -> list[str]:
    lines = ["| metric | value |", "| --- | --- |"]
    lines += [f"| {name} | {_number(value)} |" for name, value in metrics.items()
              if isinstance(value, (int, float)) and not isinstance(value, bool)]
    return lines


def markdown(name: str, version: str | None, destination: str, pushed: bool,
             snapshot: dict, overall: dict, slices: dict[str, dict],
             fairness: dict, report: str) -> str:
    """`overall`: metric -> value; `slices`: slice -> metric -> value (TFMA's);
    `fairness`: the fairness gate's fairness.json."""
    status = (f"Pushed as version {version} to `{destination}`." if pushed else
              "**Not pushed**: it did not pass its gates:\n\n"
              + "\n".join(f"- {r}" for r in fairness.get("reasons", [])))
    lines = [f"# Model card: {name}" + (f" version {version}" if pushed else ""), "",
             status, "", "## Intended use", "", INTENDED_USE[name], "",
             "## Limitations", "", *(f"- {item}" for item in LIMITATIONS), "",
             "## Data", "",
             "| | |", "| --- | --- |",
             f"| training set | `{snapshot.get('training_set')}` |",
             f"| span | {snapshot.get('span')} |",
             f"| training set sha256 | `{snapshot.get('content_sha256')}` |",
             f"| examples sha256 | `{snapshot.get('examples_sha256')}` |",
             f"| split | {snapshot.get('split')} (train fraction "
             f"{snapshot.get('train_fraction')}, seed {snapshot.get('split_seed')}) |",
             f"| train / eval ratings | {snapshot.get('train_rows')} / "
             f"{snapshot.get('eval_rows')} |", "",
             "## Metrics (eval split)", "", *_metrics(overall), ""]
    if slices:
        names = sorted({m for values in slices.values() for m in values})
        lines += ["### By slice (TFMA)", "", *_rows(dict(sorted(slices.items())), names), ""]
    broken = [r for r in fairness.get("reasons", []) if r.startswith(REASON_PREFIX)]
    verdict = "every bound holds" if not broken else "bounds broken: " + "; ".join(broken)
    lines += ["## Fairness across user groups", "",
              f"Gate: {verdict}; groups below {fairness.get('min_group_size')} are "
              f"reported, not gated. Full report: `{report}`.", "",
              "Bounds: " + ", ".join(f"{k} = {v}" for k, v in
                                     fairness.get("limits", {}).items()), ""]
    for attribute, table in fairness.get("groups", {}).items():
        columns = sorted({c for values in table.values() for c in values},
                         key=lambda c: (c != "size", c))
        lines += [f"### By {attribute}", "", *_rows(table, columns), ""]
    return "\n".join(lines) + "\n"
