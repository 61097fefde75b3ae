"""Slide-level tasks: what a model's outputs mean, their loss, metrics and predictions table.

* :class:`ClassificationTask`: C class logits, cross-entropy, AUC / accuracy / ... (the default).
* :class:`SurvivalTask`: discrete-time hazards (Patch-GCN's likelihood) or a Cox risk; C-index,
  time-dependent AUC, integrated Brier score (scikit-survival).
* :class:`RegressionTask`: one value, MSE or Huber; Pearson / Spearman r, MAE, RMSE, R^2.

Every model serves every task: a model's :meth:`~wsigraph.nn.MILModel.training_terms` gives its supervised
outputs, and the task's :meth:`~wsigraph.tasks.Task.loss` supervises each of them (SRMIL's masked-graph
term uses the task's own loss).
"""
from wsigraph.tasks.base import Task
from wsigraph.tasks.classification import ClassificationTask
from wsigraph.tasks.regression import REGRESSION_LOSSES, RegressionTask
from wsigraph.tasks.survival import SURVIVAL_LOSSES, SurvivalTask

TASKS = {"classification": ClassificationTask, "survival": SurvivalTask, "regression": RegressionTask}

__all__ = ["Task", "ClassificationTask", "SurvivalTask", "RegressionTask", "TASKS", "SURVIVAL_LOSSES",
           "REGRESSION_LOSSES"]
