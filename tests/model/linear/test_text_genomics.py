"""CoxPHTextGenomics: signal planted in report words, train-only transforms, plain-data state."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sksurv.metrics import concordance_index_censored

from kemm.model.linear.text_genomics import (
    TOKEN_PATTERN,
    CoxPHTextGenomics,
    TextGenomicsInputError,
    _tfidf,
)

FILLER = [f"word{i}" for i in range(60)]


BAD_WORDS = ["infiltrative", "lymphovascular", "necrosis", "perineural"]


def make_data(n: int = 240, seed: int = 0, text_signal: float = 1.0, with_genomics: bool = True):
    """Cases whose log-hazard rises by ``text_signal`` per adverse word (0-4 of them) in their report."""
    rng = np.random.default_rng(seed)
    ids = [f"TCGA-XX-{i:04d}" for i in range(n)]
    n_bad = rng.integers(0, len(BAD_WORDS) + 1, n)
    texts = []
    for k in n_bad:
        words = list(rng.choice(FILLER, 25)) + BAD_WORDS[:k] + (["confined", "margins", "negative"] if k == 0 else [])
        rng.shuffle(words)
        texts.append(" ".join(words))
    X = pd.DataFrame({"age": rng.normal(65, 10, n), "sex": rng.integers(0, 2, n).astype(float)}, index=ids)
    g = rng.normal(size=(n, 30))
    if with_genomics:
        X = X.join(pd.DataFrame(g, index=ids, columns=[f"G{j}_rnaseq" for j in range(30)]))
    eta = text_signal * n_bad + 0.02 * (X["age"].to_numpy() - 65) + (0.4 * g[:, 0] if with_genomics else 0)
    t_event = rng.exponential(20 * np.exp(-eta))
    t_cens = rng.uniform(5, 60, n)
    time = np.minimum(t_event, t_cens)
    event = (t_event <= t_cens).astype(int)
    return X, pd.Series(texts, index=ids), time, event


def split(X, texts, time, event, n_train: int):
    return (X.iloc[:n_train], texts.iloc[:n_train], time[:n_train], event[:n_train]), (
        X.iloc[n_train:], texts.iloc[n_train:], time[n_train:], event[n_train:])


def test_planted_text_signal_out_of_sample():
    X, texts, time, event = make_data(n=300)
    (Xa, ta, ya, ea), (Xb, tb, yb, eb) = split(X, texts, time, event, 200)
    m = CoxPHTextGenomics(n_text_components=10, n_genomic_components=5).fit(Xa, ta, ya, ea)
    risk = m.predict_risk(Xb, tb)
    c = concordance_index_censored(eb.astype(bool), yb, risk)[0]
    assert c > 0.7, c
    # the text alone carries it too (no genomic columns)
    m2 = CoxPHTextGenomics(n_text_components=10).fit(Xa[["age", "sex"]], ta, ya, ea)
    c2 = concordance_index_censored(eb.astype(bool), yb, m2.predict_risk(Xb[["age", "sex"]], tb))[0]
    assert c2 > 0.7, c2
    assert m.state_["blocks"]["genomics"] is not None and m2.state_["blocks"]["genomics"] is None


def test_no_signal_is_near_chance():
    X, texts, time, event = make_data(n=300, text_signal=0.0, with_genomics=False)
    X["age"] = np.random.default_rng(5).normal(65, 10, len(X))  # age decoupled from the outcome
    (Xa, ta, ya, ea), (Xb, tb, yb, eb) = split(X, texts, time, event, 200)
    m = CoxPHTextGenomics(n_text_components=10).fit(Xa, ta, ya, ea)
    c = concordance_index_censored(eb.astype(bool), yb, m.predict_risk(Xb, tb))[0]
    assert 0.35 < c < 0.65, c


def test_state_roundtrip_through_json_is_exact():
    X, texts, time, event = make_data(n=160)
    X.iloc[3, 0] = np.nan  # a missing age: median + indicator
    (Xa, ta, ya, ea), (Xb, tb, _, _) = split(X, texts, time, event, 120)
    m = CoxPHTextGenomics(n_text_components=8, n_genomic_components=4).fit(Xa, ta, ya, ea)
    st = json.loads(json.dumps(m.to_state()))
    m2 = CoxPHTextGenomics.from_state(st)
    grid = np.linspace(1, 40, 7)
    np.testing.assert_allclose(m2.predict_risk(Xb, tb), m.predict_risk(Xb, tb), rtol=1e-10, atol=0)
    s1, s2 = m.predict_survival(Xb, tb, grid), m2.predict_survival(Xb, tb, grid)
    np.testing.assert_allclose(s2, s1, rtol=1e-10, atol=0)
    assert s1.shape == (len(Xb), len(grid))
    assert np.all(np.diff(s1, axis=1) <= 0) and np.all((s1 > 0) & (s1 <= 1))
    assert m.state_["blocks"]["clinical"]["indicator"] == [True, False]


def test_transforms_fitted_on_training_rows_only():
    X, texts, time, event = make_data(n=160)
    (Xa, ta, ya, ea), (Xb, tb, _, _) = split(X, texts, time, event, 120)
    m = CoxPHTextGenomics(n_text_components=8, n_genomic_components=4, min_df=1).fit(Xa, ta, ya, ea)
    before = json.dumps(m.to_state())
    changed = tb.map(lambda s: s + " unseenvalidationterm infiltrative necrosis")
    r1 = m.predict_risk(Xb, changed)
    assert json.dumps(m.to_state()) == before  # prediction never refits
    assert "unseenvalidationterm" not in m.state_["blocks"]["text"]["vocabulary"]
    # a refit on the same training rows, with other validation texts around, learns the same vocabulary
    m_again = CoxPHTextGenomics(n_text_components=8, n_genomic_components=4, min_df=1).fit(Xa, ta, ya, ea)
    assert m_again.state_["blocks"]["text"]["vocabulary"] == m.state_["blocks"]["text"]["vocabulary"]
    # unseen words are ignored; words seen in training change the prediction
    np.testing.assert_allclose(m.predict_risk(Xb, tb + " unseenvalidationterm"), m.predict_risk(Xb, tb), rtol=1e-12)
    assert not np.allclose(r1, m.predict_risk(Xb, tb))


def test_tfidf_matches_sklearn():
    docs = ["Tumor invades the muscularis propria pT2", "", "margins negative; no lymphovascular invasion", "pT2 pT2 tumor"]
    ref = TfidfVectorizer(sublinear_tf=True, token_pattern=TOKEN_PATTERN).fit(docs)
    vocab = [w for w, _ in sorted(ref.vocabulary_.items(), key=lambda kv: kv[1])]
    ours = _tfidf(docs, vocab, ref.idf_)
    np.testing.assert_allclose(sparse.csr_matrix(ours).toarray(), ref.transform(docs).toarray(), atol=1e-12)


def test_missing_texts_are_zero_rows_not_errors():
    X, texts, time, event = make_data(n=150)
    texts.iloc[::7] = ""
    texts.iloc[1] = None
    m = CoxPHTextGenomics(n_text_components=6, n_genomic_components=3).fit(X, texts, time, event)
    assert np.isfinite(m.predict_risk(X, texts)).all()


def test_bad_input_gets_one_clear_error():
    X, texts, time, event = make_data(n=60)
    m = CoxPHTextGenomics(n_text_components=4, n_genomic_components=3)
    with pytest.raises(TextGenomicsInputError, match="length mismatch: X has 60 rows, texts has 59"):
        m.fit(X, texts.iloc[:59], time, event)
    with pytest.raises(TextGenomicsInputError, match="length mismatch: X has 60 rows, time has 59"):
        m.fit(X, texts, time[:59], event)
    with pytest.raises(TextGenomicsInputError, match="all 60 training cases are censored"):
        m.fit(X, texts, time, np.zeros(60))
    with pytest.raises(TextGenomicsInputError, match="no report text .*, no genomic columns .* and no knowledge-token columns"):
        m.fit(X[["age", "sex"]], texts.map(lambda _: ""), time, event)
    with pytest.raises(TextGenomicsInputError, match="texts has no entry for case 'TCGA-XX-0000'"):
        m.fit(X, texts.rename(index=lambda i: i.lower()), time, event)
    with pytest.raises(TextGenomicsInputError, match=r"X\['TCGA-XX-0002', 'age'\] = 'old'"):
        m.fit(X.assign(age=X["age"].astype(object).where(X.index != "TCGA-XX-0002", "old")), texts, time, event)
    with pytest.raises(TextGenomicsInputError, match="not fitted"):
        m.predict_risk(X, texts)
    m.fit(X, texts, time, event)
    with pytest.raises(TextGenomicsInputError, match="lacks the genomic column"):
        m.predict_risk(X.drop(columns=["G0_rnaseq"]), texts)
    with pytest.raises(TextGenomicsInputError, match="not a coxph_text_genomics state"):
        CoxPHTextGenomics.from_state({"kind": "other"})
