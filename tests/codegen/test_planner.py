"""Plans over a set of prompts and real dataset profiles; unclear prompts and data that cannot serve
the task get errors that say what is missing."""

from __future__ import annotations

import dataclasses

import pytest
import realdata
from zehanx_codegen.domain import MetricGoal, TaskFamily
from zehanx_codegen.planner import Planner, PlanOptions
from zehanx_runtime.errors import FailedPrecondition, InvalidArgument


class _NoEncoder:
    def has_sentence_encoder(self) -> bool:
        return False


class _Encoder:
    def has_sentence_encoder(self) -> bool:
        return True


@pytest.fixture(scope="module")
def planner() -> Planner:
    return Planner(_NoEncoder())


@pytest.mark.parametrize(
    ("dataset", "prompt", "family", "target", "metric"),
    [
        ("penguins", "predict the species of a penguin", TaskFamily.TABULAR_CLASSIFICATION, "species", "accuracy"),
        ("penguins", "classify penguins", TaskFamily.TABULAR_CLASSIFICATION, "species", "accuracy"),
        ("diabetes", "predict disease progression", TaskFamily.TABULAR_REGRESSION, "progression", "rmse"),
        ("digits", "recognise handwritten digits", TaskFamily.IMAGE_CLASSIFICATION, "digit", "accuracy"),
        ("sentiment", "create a sentiment analysis model", TaskFamily.TEXT_CLASSIFICATION, "sentiment", "accuracy"),
        ("airline", "forecast passengers for the next months", TaskFamily.TIME_SERIES_FORECASTING, "Passengers",
         "mape"),
    ],
)  # fmt: skip
def test_prompts_over_real_profiles_give_the_expected_plan(
    planner: Planner, request: pytest.FixtureRequest, dataset: str, prompt: str, family, target, metric
) -> None:
    data: realdata.Prepared = request.getfixturevalue(dataset)
    plan = planner.plan(prompt, data.profile)
    assert (plan.task_family, plan.target_column, plan.metric_name) == (family, target, metric)
    assert plan.metric_goal is (MetricGoal.MINIMIZE if metric in ("rmse", "mape") else MetricGoal.MAXIMIZE)
    assert target not in plan.input_columns and plan.input_columns
    assert len(plan.rationale) > 80 and "Model:" in plan.rationale


def test_the_target_and_task_are_the_crawlers_or_the_callers_never_guessed(
    planner: Planner, penguins: realdata.Prepared
) -> None:
    bare = dataclasses.replace(penguins.profile, schema_target=None, schema_task=None)
    # the prompt names a column, but choosing the target is the crawler's job: without schema.json's
    # target or a hint the planner says what it needs
    with pytest.raises(InvalidArgument) as caught:
        planner.plan("predict the island from the bill and flipper sizes", bare)
    assert (
        caught.value.reason == "NO_TARGET_COLUMN" and caught.value.violations[0].field == "target_column_hint"
    )
    with pytest.raises(InvalidArgument) as caught:
        planner.plan("predict the island", bare, PlanOptions(target_hint="island"))
    assert caught.value.reason == "NO_TASK_FAMILY" and caught.value.violations[0].field == "task_hint"
    plan = planner.plan(
        "predict the island",
        bare,
        PlanOptions(target_hint="island", task_hint=TaskFamily.TABULAR_CLASSIFICATION),
    )
    assert plan.target_column == "island" and plan.task_family is TaskFamily.TABULAR_CLASSIFICATION
    # schema.json's decision is taken as it is: the prompt's words do not move the target
    assert planner.plan("predict body mass g", penguins.profile).target_column == "species"
    schema_regression = dataclasses.replace(
        bare, schema_target="body_mass_g", schema_task=TaskFamily.TABULAR_REGRESSION
    )
    assert planner.plan("predict it", schema_regression).task_family is TaskFamily.TABULAR_REGRESSION
    with pytest.raises(FailedPrecondition, match="regression needs a numeric target"):
        planner.plan(
            "predict it", bare, PlanOptions(target_hint="island", task_hint=TaskFamily.TABULAR_REGRESSION)
        )


def test_spam_is_imbalanced_so_the_metric_is_mcc(planner: Planner, data_root) -> None:
    data = realdata.sms_spam(data_root)
    plan = planner.plan("detect spam messages", data.profile)
    assert plan.metric_name == "mcc" and "imbalanced" in plan.rationale


def test_the_encoder_is_planned_only_when_installed(sentiment: realdata.Prepared) -> None:
    with_encoder = Planner(_Encoder()).plan("sentiment of sentences", sentiment.profile)
    assert with_encoder.model_family == "tfidf_minilm_linear" and with_encoder.hyperparameters["use_encoder"]
    without = Planner(_NoEncoder()).plan("sentiment of sentences", sentiment.profile)
    assert without.model_family == "tfidf_linear" and "not installed" in without.rationale


def test_an_unclear_prompt_is_invalid_argument_on_the_prompt_field(planner: Planner, penguins) -> None:
    with pytest.raises(InvalidArgument) as caught:
        planner.plan(
            "hello there", dataclasses.replace(penguins.profile, schema_target=None, schema_task=None)
        )
    assert caught.value.reason == "PROMPT_UNCLEAR" and caught.value.violations[0].field == "prompt"


def test_an_unknown_target_hint_lists_the_columns(planner: Planner, penguins) -> None:
    with pytest.raises(InvalidArgument) as caught:
        planner.plan("predict it", penguins.profile, PlanOptions(target_hint="wingspan"))
    assert (
        caught.value.violations[0].field == "target_column_hint" and "bill_length_mm" in caught.value.message
    )


def test_data_that_cannot_serve_the_task_is_failed_precondition(planner: Planner, penguins, airline) -> None:
    with pytest.raises(FailedPrecondition, match="no image column"):
        planner.plan("classify images of penguins", penguins.profile,
                     PlanOptions(task_hint=TaskFamily.IMAGE_CLASSIFICATION))  # fmt: skip
    with pytest.raises(FailedPrecondition, match="date or time column"):
        planner.plan(
            "forecast species", penguins.profile, PlanOptions(task_hint=TaskFamily.TIME_SERIES_FORECASTING)
        )
    with pytest.raises(FailedPrecondition, match="translation"):
        planner.plan("translate these reviews to French", penguins.profile)
    tiny = dataclasses.replace(airline.profile, row_count=8)
    with pytest.raises(FailedPrecondition) as caught:
        planner.plan("forecast passengers", tiny)
    assert caught.value.reason == "TOO_FEW_ROWS"


def test_a_table_of_a_thousand_rows_or_more_gets_trees_and_a_stated_target_transform(
    planner: Planner, diamonds_price: realdata.Prepared, penguins: realdata.Prepared
) -> None:
    plan = planner.plan("predict the price of a diamond", diamonds_price.profile)
    assert plan.model_family == "gradient_boosted_trees" and plan.metric_name == "rmse"
    assert plan.hyperparameters["target_transform"] == "none" and "Target transform: none" in plan.rationale
    relative = planner.plan("predict the price with small percentage errors", diamonds_price.profile)
    assert relative.hyperparameters["target_transform"] == "log" and "log(price)" in relative.rationale
    assert planner.plan("predict the species", penguins.profile).model_family == "mlp"  # 344 rows
    few = dataclasses.replace(diamonds_price.profile, row_count=999)
    assert planner.plan("predict the price with percentage errors", few).model_family == "mlp"


def test_the_crawlers_series_columns_make_a_series_plan_and_too_few_are_refused(
    planner: Planner, arrowhead: realdata.Prepared
) -> None:
    plan = planner.plan("classify arrowhead outlines", arrowhead.profile)
    assert (
        plan.task_family is TaskFamily.TIME_SERIES_CLASSIFICATION and plan.model_family == "minirocket_ridge"
    )
    assert plan.hyperparameters["series_columns"] == [f"t{i}" for i in range(251)]
    assert "one ordered sequence" in plan.rationale
    assert (plan.hyperparameters["num_features"], plan.hyperparameters["classifier"]) == (9996, "ridge")
    big = planner.plan("classify outlines", dataclasses.replace(arrowhead.profile, row_count=10_000))
    assert big.hyperparameters["classifier"] == "logistic" and "softmax regression" in big.rationale
    assert big.hyperparameters["num_features"] == 4032  # 40% of 180 s at ~7 ns a row, step and feature
    # a schema.json written before the crawler named the family (tabular, series columns marked)
    older = dataclasses.replace(arrowhead.profile, schema_task=TaskFamily.TABULAR_CLASSIFICATION)
    assert planner.plan("classify outlines", older).task_family is TaskFamily.TIME_SERIES_CLASSIFICATION
    # without the marks the same table is tabular: the planner does not look for series itself
    unmarked = dataclasses.replace(older, series_columns=())
    assert planner.plan("classify outlines", unmarked).model_family == "mlp"
    short = dataclasses.replace(arrowhead.profile, series_columns=tuple(f"t{i}" for i in range(15)))
    with pytest.raises(FailedPrecondition, match="no columns form one ordered sequence") as caught:
        planner.plan("classify the outlines", short)
    assert caught.value.reason == "DATA_CANNOT_SERVE_TASK" and "marks 15 column(s)" in caught.value.message
    with pytest.raises(FailedPrecondition, match="no columns form one ordered sequence"):
        planner.plan(
            "classify outlines", unmarked, PlanOptions(task_hint=TaskFamily.TIME_SERIES_CLASSIFICATION)
        )
