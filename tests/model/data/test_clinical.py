"""clinical.py and knowledge.py: covariates for linear models; knowledge errors become DataError at the seam."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kemm.model.data.clinical import clinical_frame, read_report_fields
from kemm.model.data.cohort import Cohort
from kemm.model.data.knowledge import load_table
from kemm.model.errors import DataError


def _cohort() -> Cohort:
    t = pd.DataFrame({"age": [60, None, 70], "sex": [0, 1, 1], "note": ["a", "b", "c"]},
                     index=pd.Index(["p1", "p2", "p3"], name="case_id"))
    return Cohort(t, "cohort.csv")


def test_cohort_columns_and_report_fields_in_order() -> None:
    rf = pd.DataFrame({"stage": [3.0, np.nan], "grade": [2.0, 1.0]}, index=["p3", "p1"])
    X = clinical_frame(_cohort(), ["stage", "age", "grade", "pT"], rf)
    assert list(X.columns) == ["stage", "age", "grade", "pT"] and list(X.index) == ["p1", "p2", "p3"]
    assert X.loc["p3", "stage"] == 3.0 and np.isnan(X.loc["p1", "stage"]) and np.isnan(X.loc["p2", "grade"])
    assert X["pT"].isna().all()  # a report field the source lacks is missing, not an error
    assert np.isnan(X.loc["p2", "age"])


def test_report_fields_without_a_source_are_skipped() -> None:
    assert list(clinical_frame(_cohort(), ["age", "stage"], None).columns) == ["age"]


def test_unknown_covariate_names_the_file_and_the_choices() -> None:
    with pytest.raises(DataError, match=r"data.clinical: 'bmi' is neither a column of cohort.csv"):
        clinical_frame(_cohort(), ["bmi"])


def test_missing_knowledge_source_is_a_data_error(tmp_path) -> None:
    with pytest.raises(DataError):
        read_report_fields(tmp_path, "no-such-source")
    with pytest.raises(DataError, match="no-such-source"):
        load_table(tmp_path, "no-such-source")
