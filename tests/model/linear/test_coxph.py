"""CoxPH saved as plain data: a model rebuilt from JSON predicts exactly what the fitted lifelines model does."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pandas as pd
import pytest

from kemm.model.errors import RunError
from kemm.model.linear.coxph import CoxPHClinical


def _data(n: int = 120, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    age = rng.normal(65, 10, n)
    age[rng.uniform(size=n) < 0.1] = np.nan
    stage = rng.choice(["I", "II", "III"], n).astype(object)
    stage[rng.uniform(size=n) < 0.1] = None
    X = pd.DataFrame({"age": age, "stage": stage, "sex": rng.integers(0, 2, n)})
    eta = 0.04 * np.nan_to_num(age - 65) + (X["stage"] == "III").to_numpy() * 0.8
    time = rng.exponential(30 * np.exp(-eta))
    event = (rng.uniform(size=n) < 0.7).astype(int)
    return X, time, event


def test_json_state_predicts_identically_to_a_pickled_fitter(tmp_path) -> None:
    X, time, event = _data()
    cox = CoxPHClinical(penalizer=0.1).fit(X.iloc[:90], time[:90], event[:90])
    pickled = pickle.loads(pickle.dumps(cox))  # the old on-disk format, made here
    times = np.array([1.0, 5.0, 12.5, 30.0, 200.0])
    test = X.iloc[90:]
    design = pickled._encode(test)[pickled.columns_]
    ref_risk = np.asarray(pickled.model_.predict_log_partial_hazard(design), float)
    ref_surv = np.asarray(pickled.model_.predict_survival_function(design, times=times), float).T

    path = tmp_path / "model.json"
    path.write_text(json.dumps(cox.to_state()))
    rebuilt = CoxPHClinical.from_state(json.loads(path.read_text()))
    assert not hasattr(rebuilt, "model_")  # nothing of lifelines is needed to predict
    np.testing.assert_array_equal(rebuilt.predict_risk(test), ref_risk)
    np.testing.assert_array_equal(rebuilt.predict_survival(test, times), ref_surv)
    np.testing.assert_array_equal(cox.predict_risk(test), ref_risk)


def test_state_is_plain_json_and_unseen_categories_still_predict() -> None:
    X, time, event = _data(seed=1)
    st = CoxPHClinical().fit(X, time, event).to_state()
    assert json.loads(json.dumps(st)) == st
    new = pd.DataFrame({"age": [np.nan, 70.0], "stage": ["IV", "I"], "sex": [0, 1]})
    risk = CoxPHClinical.from_state(st).predict_risk(new)
    assert risk.shape == (2,) and np.isfinite(risk).all()


def test_wrong_state_format_is_refused() -> None:
    X, time, event = _data(seed=2)
    st = CoxPHClinical().fit(X, time, event).to_state()
    with pytest.raises(RunError, match="format"):
        CoxPHClinical.from_state({**st, "format": "something-else"}, "x.json")
