"""XGBoost gate: one gradient-boosted tree model shared over exits (depth is a feature)."""

from __future__ import annotations

import numpy as np
import xgboost

from gates import io
from gates.learned import LearnedGate, TrainingRows, positive_weight

# Booster attribute that records the gate kind inside XGBoost's own JSON file.
KIND_ATTRIBUTE = "gate_kind"


class XGBoostGate(LearnedGate):
    """xgboost.XGBClassifier on gate features, positive labels weighted by n_neg / n_pos."""

    kind = "xgboost"

    def __init__(self, n_components: int = 8, trajectory: bool = False, n_estimators: int = 200, max_depth: int = 4,
                 learning_rate: float = 0.1, n_jobs: int = 1):
        super().__init__(n_components, trajectory)
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.n_jobs = n_jobs

    def _param_dict(self) -> dict:
        return {
            **super()._param_dict(),
            "n_estimators": self.n_estimators,
            "max_depth": self.max_depth,
            "learning_rate": self.learning_rate,
            "n_jobs": self.n_jobs,
        }

    def _fit_model(self, rows: TrainingRows, inputs: np.ndarray, seed: int) -> None:
        self.model_ = xgboost.XGBClassifier(
            n_estimators=self.n_estimators,
            max_depth=self.max_depth,
            learning_rate=self.learning_rate,
            n_jobs=self.n_jobs,
            scale_pos_weight=positive_weight(rows.labels, "over all exits"),
            tree_method="hist",
            random_state=seed,
        )
        self.model_.fit(inputs.astype(np.float32), rows.labels.astype(np.int64))

    def _predict(self, exit_index: int, inputs: np.ndarray) -> np.ndarray:
        # Each row sums its own leaf values, so a row's score does not depend on its batch.
        return self.model_.predict_proba(inputs.astype(np.float32))[:, 1].astype(np.float64)

    def _model_cost_flops(self) -> int:
        # An estimate: one comparison per tree level, no cost for the leaf sum.
        return self.n_estimators * self.max_depth

    def _arrays(self) -> dict[str, np.ndarray]:
        return self._base_arrays()

    def _save_extra(self, directory, name) -> dict:
        path = directory / f"{name}.xgb.json"
        self.model_.get_booster().set_attr(**{KIND_ATTRIBUTE: self.kind})
        io.write_atomic(path, lambda tmp: self.model_.save_model(str(tmp)))
        return {"xgboost_model": {"file": path.name, "sha256": io.file_sha256(path)}}

    def _restore(self, config, arrays, directory, name) -> None:
        self._restore_base(arrays)
        entry = config.get("xgboost_model")
        if entry is None:
            raise ValueError("the xgboost gate JSON lacks its xgboost_model entry. Save the gate again")
        path = io.companion_path(directory, entry.get("file"), directory / f"{name}.json")
        io.check_sha256(path, entry["sha256"])
        self.model_ = xgboost.XGBClassifier(n_jobs=self.n_jobs)
        self.model_.load_model(str(path))
        found = self.model_.get_booster().attr(KIND_ATTRIBUTE)
        if found != self.kind:
            raise ValueError(f"expecting xgboost gate, got {found!r} in {str(path)!r}. Pass the file this gate saved")
