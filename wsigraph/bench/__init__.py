"""Accuracy benchmark: every model on every cohort over several seeds, on identical splits, resumable.

    from wsigraph.bench import load_bench_config, run_benchmark
    cfg = load_bench_config("benchmarks/configs/default.yaml", ["seeds=[0,1]"])
    runs = run_benchmark(cfg)          # DataFrame: one row per cohort x model x seed x fold

writes ``runs.csv``, ``table.md`` (mean ± std, best in bold), ``wilcoxon.csv`` (reference model vs each
other model, paired over seed x fold), ``localization.csv`` and ``boxplot_<metric>.png`` into
``cfg.output_dir``. ``wsigraph bench --config bench.yaml`` is the command-line form. A recipe with
placeholder cohort paths (the examples' ``bench.yaml``) is filled in by :func:`fill_bench_template`.
"""
from wsigraph.bench.config import BenchConfig, CohortSpec, ModelSpec, load_bench_config
from wsigraph.bench.harness import run_benchmark
from wsigraph.bench.report import write_reports
from wsigraph.bench.stats import paired_wilcoxon, wilcoxon_table
from wsigraph.bench.template import fill_bench_template, write_bench_config

__all__ = ["BenchConfig", "CohortSpec", "ModelSpec", "load_bench_config", "run_benchmark", "write_reports",
           "paired_wilcoxon", "wilcoxon_table", "fill_bench_template", "write_bench_config"]
