"""Logistic-regression gate: sklearn LogisticRegression with balanced class weights."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression

from gates.learned import LearnedGate, TrainingRows, positive_weight
from gates.probs import rowwise_matmul, sigmoid


class LogisticGate(LearnedGate):
    """LogisticRegression(class_weight="balanced") on standardised gate features, shared over exits."""

    kind = "logistic"

    def __init__(self, n_components: int = 8, trajectory: bool = False, C: float = 1.0, max_iter: int = 1000):
        super().__init__(n_components, trajectory)
        self.C = C
        self.max_iter = max_iter

    def _param_dict(self) -> dict:
        return {**super()._param_dict(), "C": self.C, "max_iter": self.max_iter}

    def _fit_model(self, rows: TrainingRows, inputs: np.ndarray, seed: int) -> None:
        # Raises a clear error when the labels have one class.
        positive_weight(rows.labels, "over all exits")
        self.model_ = LogisticRegression(
            C=self.C, class_weight="balanced", max_iter=self.max_iter, random_state=seed
        )
        self.model_.fit(inputs, rows.labels.astype(np.int64))

    def _predict(self, exit_index: int, inputs: np.ndarray) -> np.ndarray:
        # Same value as model_.predict_proba, but with a fixed summation order per row.
        logits = rowwise_matmul(inputs, self.model_.coef_)[:, 0] + self.model_.intercept_[0]
        return sigmoid(logits)

    def _model_cost_flops(self) -> int:
        return 2 * self.featurizer_.num_features_

    def _arrays(self) -> dict[str, np.ndarray]:
        arrays = self._base_arrays()
        arrays["logistic.coef"] = self.model_.coef_
        arrays["logistic.intercept"] = self.model_.intercept_
        arrays["logistic.classes"] = self.model_.classes_
        return arrays

    def _restore(self, config, arrays, directory, name) -> None:
        self._restore_base(arrays)
        model = LogisticRegression(C=self.C, class_weight="balanced", max_iter=self.max_iter)
        model.coef_ = arrays["logistic.coef"]
        model.intercept_ = arrays["logistic.intercept"]
        model.classes_ = arrays["logistic.classes"]
        model.n_features_in_ = model.coef_.shape[1]
        self.model_ = model
