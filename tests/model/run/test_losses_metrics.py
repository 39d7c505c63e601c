"""Losses and metrics against hand-computed values, lifelines and scikit-survival."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kemm.model.linear.coxph import CoxPHClinical
from kemm.model.nn.losses import (
    cox_ph_loss,
    discretize,
    hazards_to_survival,
    make_bins,
    nll_surv_loss,
    risk_from_logits,
)
from kemm.model.run.metrics import (
    censoring_support,
    eval_grid,
    harrell_c,
    integrated_brier,
    step_survival,
    survival_metrics,
    td_auc,
    uno_c,
)

LOG2 = math.log(2.0)


def _cohort(n: int = 120, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    t = rng.exponential(np.exp(-0.8 * x)) * 10 + 0.05
    c = rng.exponential(15, size=n) + 0.05
    return x, np.minimum(t, c), t <= c


# -- bins --------------------------------------------------------------------------------
def test_make_bins_uses_uncensored_quantiles() -> None:
    times = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 100.0])
    events = np.array([1, 1, 1, 1, 1, 0])
    edges = make_bins(times, events, n_bins=4)
    # quantiles of [1..5] at 0, .25, .5, .75, 1 = 1, 2, 3, 4, 5; ends widened to [0, max + eps]
    np.testing.assert_allclose(edges, [0.0, 2.0, 3.0, 4.0, 100.0 + 1e-6])
    np.testing.assert_array_equal(discretize([0.5, 2.0, 3.5, 4.0, 99.0, 500.0], edges), [0, 1, 2, 3, 3, 3])


def test_make_bins_validation() -> None:
    with pytest.raises(ValueError, match="all training samples are censored"):
        make_bins([1.0, 2.0], [0, 0])
    with pytest.raises(ValueError, match="NaN"):
        make_bins([1.0, np.nan], [1, 1])
    with pytest.raises(ValueError, match="3 entries"):
        make_bins([1.0, 2.0, 3.0], [1, 1])
    with pytest.warns(UserWarning, match="tied quantiles"):
        edges = make_bins([5.0] * 8 + [9.0], [1] * 9)
    assert (np.diff(edges) > 0).all() and len(edges) == 5


# -- discrete-time NLL -------------------------------------------------------------------
def test_nll_hand_computed() -> None:
    # logits 0 -> h = 0.5 in every bin -> S = [.5, .25, .125, .0625]
    logits = torch.zeros(3, 4)
    label = torch.tensor([0, 1, 2])
    cens = torch.tensor([0.0, 1.0, 0.0])
    # event in bin 0: -log 1 - log .5; censored in bin 1: -log S_1; event in bin 2: -log S_1 - log .5
    expected = torch.tensor([LOG2, 2 * LOG2, 3 * LOG2])
    torch.testing.assert_close(nll_surv_loss(logits, label, cens, reduction="none"), expected)
    torch.testing.assert_close(nll_surv_loss(logits, label, cens), expected.mean())
    torch.testing.assert_close(nll_surv_loss(logits, label, cens, reduction="sum"), expected.sum())
    # alpha re-weights: uncensored stay, censored scaled by (1 - alpha)
    got = nll_surv_loss(logits, label, cens, alpha=0.4, reduction="none")
    torch.testing.assert_close(got, torch.tensor([LOG2, 0.6 * 2 * LOG2, 3 * LOG2]))


def test_nll_validation() -> None:
    logits = torch.zeros(2, 4)
    with pytest.raises(ValueError, match="length mismatch"):
        nll_surv_loss(logits, torch.tensor([0, 1, 2]), torch.zeros(2))
    with pytest.raises(ValueError, match=r"\[0, 3\]"):
        nll_surv_loss(logits, torch.tensor([0, 4]), torch.zeros(2))
    with pytest.raises(ValueError, match="NaN"):
        nll_surv_loss(torch.full((2, 4), float("nan")), torch.tensor([0, 1]), torch.zeros(2))
    with pytest.raises(ValueError, match="reduction"):
        nll_surv_loss(logits, torch.tensor([0, 1]), torch.zeros(2), reduction="avg")


def test_survival_and_risk_from_logits() -> None:
    logits = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    s = hazards_to_survival(logits)
    torch.testing.assert_close(s[0], torch.tensor([0.5, 0.25]))
    assert (s[:, 1:] <= s[:, :-1]).all()
    r = risk_from_logits(logits)
    assert r[1] > r[0]  # a high first-bin hazard is worse
    torch.testing.assert_close(r[0], torch.tensor(-0.75))


# -- Cox ---------------------------------------------------------------------------------
def test_cox_hand_computed_with_breslow_ties() -> None:
    risk = torch.tensor([0.0, 1.0, 2.0, 0.5])
    time = torch.tensor([1.0, 1.0, 3.0, 4.0])
    event = torch.tensor([1, 1, 0, 1])
    e = np.exp([0.0, 1.0, 2.0, 0.5])
    den_all = math.log(e.sum())  # both tied events at t=1 share the full risk set (Breslow)
    expected = np.array([-(0.0 - den_all), -(1.0 - den_all), 0.0, -(0.5 - math.log(e[3]))])
    got = cox_ph_loss(risk, time, event, reduction="none")
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(cox_ph_loss(risk, time, event).item(), expected.sum() / 3, rtol=1e-6)


def test_cox_matches_lifelines_log_likelihood() -> None:
    from lifelines import CoxPHFitter

    x, t, e = _cohort()
    df = pd.DataFrame({"x": x, "T": t, "E": e.astype(int)})
    cph = CoxPHFitter().fit(df, "T", "E")  # no ties in continuous times: Efron == Breslow
    risk = torch.tensor(cph.params_["x"] * x, dtype=torch.float64)
    nll = cox_ph_loss(risk, torch.tensor(t), torch.tensor(e), reduction="sum").item()
    assert nll == pytest.approx(-cph.log_likelihood_, rel=1e-6)


def test_cox_no_event_and_validation() -> None:
    risk = torch.randn(3, requires_grad=True)
    with pytest.warns(UserWarning, match="no event"):
        loss = cox_ph_loss(risk, torch.tensor([1.0, 2, 3]), torch.zeros(3))
    assert loss.item() == 0.0
    loss.backward()
    with pytest.raises(ValueError, match="length mismatch"):
        cox_ph_loss(torch.zeros(3), torch.ones(2), torch.ones(3))


# -- metrics -----------------------------------------------------------------------------
def test_harrell_c_hand_and_lifelines() -> None:
    from lifelines.utils import concordance_index

    time = np.array([1.0, 2.0, 3.0, 4.0])
    event = np.array([1, 1, 0, 1])
    assert harrell_c(time, event, [4.0, 3.0, 2.0, 1.0]) == 1.0
    assert harrell_c(time, event, [1.0, 2.0, 3.0, 4.0]) == 0.0
    # comparable pairs: (0,1),(0,2),(0,3),(1,2),(1,3); risk [3,1,2,0]: (1,2) discordant -> 4/5
    assert harrell_c(time, event, [3.0, 1.0, 2.0, 0.0]) == pytest.approx(0.8)
    x, t, e = _cohort()
    risk = x + np.random.default_rng(1).normal(size=len(x))
    assert harrell_c(t, e, risk) == pytest.approx(concordance_index(t, -risk, e))  # lifelines: reversed sign


def test_uno_c_matches_sksurv_and_tau_checks() -> None:
    from sksurv.metrics import concordance_index_ipcw
    from sksurv.util import Surv

    x, t, e = _cohort(200)
    tr, te = slice(0, 140), slice(140, 200)
    tau = float(np.percentile(t[tr], 80))
    ref = concordance_index_ipcw(Surv.from_arrays(e[tr], t[tr]), Surv.from_arrays(e[te], t[te]), x[te], tau=tau)[0]
    assert uno_c(t[tr], e[tr], t[te], e[te], x[te], tau=tau) == pytest.approx(ref)
    assert 0.0 <= uno_c(t[tr], e[tr], t[te], e[te], x[te]) <= 1.0
    with pytest.raises(ValueError, match="beyond the training follow-up"):
        uno_c(t[tr], e[tr], t[te], e[te], x[te], tau=t[tr].max() + 1)


def test_brier_and_auc_match_sksurv() -> None:
    from sksurv.metrics import cumulative_dynamic_auc, integrated_brier_score
    from sksurv.util import Surv

    x, t, e = _cohort(200)
    tr, te = slice(0, 140), slice(140, 200)
    grid = eval_grid(t[tr], t[te], e[te], n=10, train_event=e[tr])
    assert len(grid) == 10 and grid.min() >= t[te].min() and grid.max() < min(t[te].max(), t[tr].max())
    surv = np.exp(-np.outer(np.exp(0.8 * x[te]), grid) / 10)
    ytr, yte = Surv.from_arrays(e[tr], t[tr]), Surv.from_arrays(e[te], t[te])
    assert integrated_brier(t[tr], e[tr], t[te], e[te], surv, grid) == pytest.approx(
        integrated_brier_score(ytr, yte, surv, grid)
    )
    assert td_auc(t[tr], e[tr], t[te], e[te], x[te], grid) == pytest.approx(
        cumulative_dynamic_auc(ytr, yte, x[te], grid)[1]
    )
    with pytest.raises(ValueError, match="eval_grid"):
        integrated_brier(t[tr], e[tr], t[te], e[te], surv, grid + 1e6)


def test_test_times_beyond_training_follow_up_are_handled() -> None:
    x, t, e = _cohort(200)
    order = np.argsort(t)
    tr, te = order[:150], order[50:]  # test fold outlives the training fold
    grid = eval_grid(t[tr], t[te], e[te], train_event=e[tr])
    assert grid.max() < censoring_support(t[tr], e[tr])
    surv = np.full((len(te), len(grid)), 0.5)
    out = survival_metrics(t[tr], e[tr], t[te], e[te], x[te], surv_probs=surv, grid=grid)
    assert all(np.isfinite(v) for v in out.values()), out


def test_step_survival() -> None:
    edges = np.array([0.0, 10.0, 20.0, 30.0])
    s_bins = np.array([[0.9, 0.5, 0.2]])
    got = step_survival(s_bins, edges, [0.0, 5.0, 10.0, 19.9, 20.0, 25.0, 40.0])
    np.testing.assert_allclose(got, [[1.0, 1.0, 0.9, 0.9, 0.5, 0.5, 0.2]])
    with pytest.raises(ValueError, match="K = len"):
        step_survival(s_bins, edges[:-1], [1.0])


def test_survival_metrics_nan_not_crash(caplog) -> None:
    x, t, e = _cohort(100)
    out = survival_metrics(t[:70], e[:70], t[70:], np.zeros(30, bool), x[70:])
    assert all(np.isnan(v) for v in out.values())
    assert "c_index is NaN" in caplog.text


def test_survival_metrics_from_logits() -> None:
    x, t, e = _cohort(150)
    tr, te = slice(0, 100), slice(100, 150)
    edges = make_bins(t[tr], e[tr])
    logits = torch.tensor(np.outer(x[te], np.ones(4)) - 1.5)
    s_bins = hazards_to_survival(logits).numpy()
    risk = risk_from_logits(logits).numpy()
    out = survival_metrics(t[tr], e[tr], t[te], e[te], risk, S_bins=s_bins, edges=edges)
    assert set(out) == {"c_index", "c_index_ipcw", "ibs", "td_auc"}
    assert out["c_index"] > 0.6 and 0.0 < out["ibs"] < 0.5 and out["td_auc"] > 0.6


# -- property tests ----------------------------------------------------------------------
@st.composite
def survival_data(draw, min_n: int = 2, max_n: int = 30):
    n = draw(st.integers(min_n, max_n))
    times = draw(st.lists(st.floats(0.01, 1e4, allow_nan=False), min_size=n, max_size=n))
    events = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    events[draw(st.integers(0, n - 1))] = True  # at least one event
    risk = draw(st.lists(st.floats(-20, 20, allow_nan=False), min_size=n, max_size=n))
    return np.array(times), np.array(events), np.array(risk)


@settings(max_examples=60, deadline=None)
@given(survival_data(), st.integers(1, 6))
def test_property_losses_finite_and_c_in_unit_interval(data, n_bins: int) -> None:
    times, events, risk = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tied quantiles are expected on drawn data
        edges = make_bins(times, events, n_bins=n_bins)
    labels = torch.from_numpy(discretize(times, edges))
    logits = torch.from_numpy(np.outer(risk, np.ones(n_bins)))
    nll = nll_surv_loss(logits, labels, torch.from_numpy(~events))
    cox = cox_ph_loss(torch.from_numpy(risk), torch.from_numpy(times), torch.from_numpy(events))
    assert torch.isfinite(nll) and nll >= 0
    assert torch.isfinite(cox) and cox >= 0
    try:
        c = harrell_c(times, events, risk)
    except ValueError as exc:  # every event time tied: no comparable pair
        assert "comparable" in str(exc)
    else:
        assert 0.0 <= c <= 1.0


# -- CoxPH on clinical covariates ----------------------------------------------------------
def _clinical(n: int = 150, seed: int = 0):
    x, t, e = _cohort(n, seed)
    rng = np.random.default_rng(seed + 1)
    df = pd.DataFrame(
        {
            "score": x,
            "age": np.where(rng.random(n) < 0.1, np.nan, rng.normal(60, 10, n)),
            "stage": rng.choice(["I", "II", "III"], n),
            "site": "breast",  # constant -> dropped
        }
    )
    return df, t, e


def test_coxph_clinical_fit_predict() -> None:
    df, t, e = _clinical()
    m = CoxPHClinical(penalizer=0.1).fit(df, t, e)
    assert "site=breast" not in m.columns_ and "age__missing" in m.columns_
    risk = m.predict_risk(df)
    assert risk.shape == (len(df),) and harrell_c(t, e, risk) > 0.6
    times = [1.0, 5.0, 10.0]
    s = m.predict_survival(df, times)
    assert s.shape == (len(df), 3) and (np.diff(s, axis=1) <= 1e-12).all() and ((0 <= s) & (s <= 1)).all()
    new = df.head(3).copy()
    new.loc[:, "stage"] = ["IV", "I", None]  # unseen category and a NaN -> zeros
    new.loc[:, "age"] = np.nan
    assert np.isfinite(m.predict_risk(new)).all()


def test_coxph_clinical_errors() -> None:
    df, t, e = _clinical()
    with pytest.raises(ValueError, match="no usable clinical column"):
        CoxPHClinical().fit(df[["site"]], t, e)
    with pytest.raises(ValueError, match="missing from X"):
        CoxPHClinical().fit(df, t, e).predict_risk(df.drop(columns="stage"))
    with pytest.raises(RuntimeError, match="not fitted"):
        CoxPHClinical().predict_risk(df)
