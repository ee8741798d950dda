"""The task families: what a dataset, a plan and a model are for (``zehanx.common.v1.TaskFamily``).

One name in every service: the crawler decides a dataset's family (``zehanx_crawler.task``), codegen's
planner checks that the data can serve it and fills that family's template. Each service maps it to and
from the proto enum by name (``zehanx_runtime.enums.proto_numbers``), so the two cannot drift apart.
"""

from __future__ import annotations

import enum


class TaskFamily(enum.StrEnum):
    """Named as in ``schema.json`` and, upper-cased after ``TASK_FAMILY_``, ``zehanx.common.v1.TaskFamily``."""

    TEXT_CLASSIFICATION = "text_classification"
    TABULAR_CLASSIFICATION = "tabular_classification"
    TABULAR_REGRESSION = "tabular_regression"
    IMAGE_CLASSIFICATION = "image_classification"
    TIME_SERIES_FORECASTING = "time_series_forecasting"
    TIME_SERIES_CLASSIFICATION = "time_series_classification"

    @property
    def is_classification(self) -> bool:
        return self in (
            TaskFamily.TEXT_CLASSIFICATION,
            TaskFamily.TABULAR_CLASSIFICATION,
            TaskFamily.IMAGE_CLASSIFICATION,
            TaskFamily.TIME_SERIES_CLASSIFICATION,
        )
