"""The MLflow model registry: the names models are registered under, and the ``champion``
alias that label-free selection scores move (real labels report, they never choose)."""

from __future__ import annotations

REFINER_MODEL = "simrefinery-refiner"
ESTIMATOR_MODEL = "simrefinery-estimator"
DESCRIPTIONS = {
    REFINER_MODEL: "The SimGAN refiner: uint8 images in (N x H x W, or N x H x W x C), refined uint8 images out. "
                   "@champion: the refiner of the champion estimator.",
    ESTIMATOR_MODEL: "The task's estimator, trained on synthetic or refined images (tag training_data.*). "
                     "@champion: the best label-free selection score (tags selection_rule, the rule's figure under its "
                     "own name, and selection_score: that figure where higher is better, minus it where lower is); "
                     "real_test_score is reported, never chosen by."}
# what each rule's figure is, for the people who read it in the registry; its selection score
# is the figure where higher is better, minus the figure where lower is
RULES = {"class_realism": ("the class realism of the refined images (a logistic regression telling them from the "
                           "real pool's images of the same pseudo-class; 0.5 = indistinguishable)", "lower"),
         "reverse_validation": ("reverse validation: the real pool labelled by these estimators, scored back on "
                                "the synthetic images", "higher")}


def promote_champion(models: dict[str, dict | None], reported: dict[str, float], score: float | None,
                     rule: str) -> bool:
    """Tag each estimator version with its real-test figure (for people to read); the one
    trained on refined data becomes ``champion`` (and its refiner too) when its label-free
    selection score beats the current champion's: real labels report, they never choose.
    Scores of different rules (``rule``) do not compare: a champion chosen by another rule
    (untagged ones were chosen by reverse validation) gives way to the candidate."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    client = MlflowClient()
    for name, record in models.items():
        if record and name in reported:
            client.set_model_version_tag(ESTIMATOR_MODEL, record["version"], "real_test_score", f"{reported[name]:.4f}")
    candidate = models.get("refined")
    if not candidate or score is None:
        return False
    client.set_model_version_tag(ESTIMATOR_MODEL, candidate["version"], "selection_score", f"{score:.6f}")
    client.set_model_version_tag(ESTIMATOR_MODEL, candidate["version"], "selection_rule", rule)
    # the rule's own figure under its own name, as the report has it (the score is minus a
    # class realism: a negative number that reads as a bad one)
    about, better = RULES.get(rule, (rule, "higher"))
    figure = -score if better == "lower" else score
    client.set_model_version_tag(ESTIMATOR_MODEL, candidate["version"], rule, f"{figure:.4f}")
    client.update_model_version(ESTIMATOR_MODEL, candidate["version"],
                                description=f"chosen by {rule.replace('_', ' ')}: {figure:.4f}, {better} is better; {about}")
    for name in (ESTIMATOR_MODEL, REFINER_MODEL) if models.get("refiner") else (ESTIMATOR_MODEL,):
        client.update_registered_model(name, description=DESCRIPTIONS[name])
    try:
        champion = client.get_model_version_by_alias(ESTIMATOR_MODEL, "champion")
        same_rule = champion.tags.get("selection_rule", "reverse_validation") == rule
        best = float(champion.tags.get("selection_score", "-inf")) if same_rule else float("-inf")
    except MlflowException:
        best = float("-inf")
    if score <= best:
        return False
    client.set_registered_model_alias(ESTIMATOR_MODEL, "champion", candidate["version"])
    if models.get("refiner"):
        client.set_registered_model_alias(REFINER_MODEL, "champion", models["refiner"]["version"])
    return True
