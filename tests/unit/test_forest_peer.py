import numpy as np
from sklearn.ensemble import RandomForestClassifier

from har.experiment import RunConfig, forest_predict


def test_forest_votes_are_summed_in_tree_order():
    # Few distinct feature values and tiny leaves make exact vote ties common: the case where a
    # threaded, finish-order sum of tree votes can flip the predicted class between runs.
    rng = np.random.default_rng(0)
    x = rng.integers(0, 3, size=(400, 4)).astype(np.float32)
    y = rng.integers(0, 3, size=400)
    cfg = RunConfig(rf_trees=24)
    got = forest_predict(x[:300], y[:300], x[300:], cfg)
    ref = RandomForestClassifier(24, random_state=cfg.seed, min_samples_leaf=2).fit(x[:300], y[:300])
    votes = sum(tree.predict_proba(x[300:]) for tree in ref.estimators_)
    np.testing.assert_array_equal(got, ref.classes_[votes.argmax(1)])
    np.testing.assert_array_equal(got, forest_predict(x[:300], y[:300], x[300:], cfg))
