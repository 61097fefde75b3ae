"""Baseline MIL models, one per file, each written from its paper (cited in its docstring)."""
from wsigraph.nn.models.abmil import ABMIL
from wsigraph.nn.models.clam import CLAMSB, smooth_top1_svm_loss
from wsigraph.nn.models.dsmil import DSMIL
from wsigraph.nn.models.graph_abmil import GraphABMIL
from wsigraph.nn.models.nystrom import NystromAttention, iterative_pinv
from wsigraph.nn.models.patch_gcn import PatchGCN
from wsigraph.nn.models.pooling import MaxPoolMIL, MeanPoolMIL
from wsigraph.nn.models.transmil import TransMIL

__all__ = ["ABMIL", "CLAMSB", "DSMIL", "GraphABMIL", "MaxPoolMIL", "MeanPoolMIL", "NystromAttention", "PatchGCN",
           "TransMIL", "iterative_pinv", "smooth_top1_svm_loss"]
