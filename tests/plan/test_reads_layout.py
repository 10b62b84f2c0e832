"""What planning read decides the plan cache's validity and the DAG's layout (issue 12).

Real Snakemake plans every workflow here (a worker process per plan); no DAG is run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from smaker_airflow.config import load_config
from smaker_airflow.errors import ConfigError, SmakerError
from smaker_airflow.plan import cache, layout
from smaker_airflow.plan.reads import FOLDER

LANDING = """\
import os
SAMPLES, = glob_wildcards(os.path.join(config["landing"], "{sample}.csv"))

rule all:
    input: "report/rows.txt"

rule count_rows:
    input: os.path.join(config["landing"], "{sample}.csv")
    output: "counts/{sample}.txt"
    shell: "wc -l < {input} > {output}"

rule report:
    input: expand("counts/{sample}.txt", sample=SAMPLES)
    output: "report/rows.txt"
    shell: "for f in {input}; do echo $f $(cat $f); done > {output}"
"""

SHEET = """\
import csv
with open(config["sheet"]) as handle:
    SAMPLES = [row["sample"] for row in csv.DictReader(handle, delimiter="\\t")]

rule all:
    input: expand("out/{sample}.txt", sample=SAMPLES)

rule make:
    output: "out/{sample}.txt"
    shell: "echo {wildcards.sample} > {output}"
"""

PLAIN = """\
rule all:
    input: "out/a.txt"

rule make:
    output: "out/{name}.txt"
    shell: "echo {wildcards.name} > {output}"
"""


def _config(root: Path, name: str, snakefile: str, extra: str = "", workflow_extra: str = "") -> Path:
    (root / "workflow").mkdir(parents=True, exist_ok=True)
    (root / "workflow" / "Snakefile").write_text(snakefile)
    (root / "configs").mkdir(exist_ok=True)
    path = root / "configs" / f"{name}.yaml"
    path.write_text(
        f"dag_id: {name}\nworkflow: {{snakefile: workflow/Snakefile{workflow_extra}}}\nparams: {{}}\n{extra}"
    )
    return path


def test_a_file_landing_in_a_globbed_folder_invalidates_the_cached_plan(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "d1.csv").write_text("a\nb\n")
    cfg = load_config(_config(tmp_path / "p", "landing", LANDING, f"config: {{landing: {landing}}}\n"))
    first = cache.load_plan(cfg)
    assert sorted(job.target for job in first.jobs) == ["count_rows:sample=d1", "report:"]
    assert FOLDER + str(landing.resolve()) in first.data  # the folder is data: its listing is recorded
    assert layout.choose_layout(cfg, first).name == layout.MAPPED
    assert "planning read data (folder " in layout.choose_layout(cfg, first).reason
    assert cache.read(cfg) is not None  # nothing changed: the cached plan is served
    (landing / "d2.csv").write_text("c\n")
    assert cache.read(cfg) is None  # a new file: the cached plan is stale
    second = cache.load_plan(cfg)
    assert sorted(job.target for job in second.jobs) == ["count_rows:sample=d1", "count_rows:sample=d2", "report:"]


def test_an_edited_sample_sheet_changes_the_plan(tmp_path: Path) -> None:
    sheet = tmp_path / "sheets" / "samples.tsv"
    sheet.parent.mkdir()
    sheet.write_text("sample\nA\n")
    cfg = load_config(_config(tmp_path / "p", "sheet", SHEET, f"config: {{sheet: {sheet}}}\n"))
    first = cache.load_plan(cfg)
    assert [job.target for job in first.jobs] == ["make:sample=A"]
    assert str(sheet.resolve()) in first.data
    sheet.write_text("sample\nA\nB\n")
    assert cache.read(cfg) is None
    assert sorted(job.target for job in cache.load_plan(cfg).jobs) == ["make:sample=A", "make:sample=B"]


def test_a_workflow_reading_only_its_own_files_gets_one_task_per_job(tmp_path: Path) -> None:
    cfg = load_config(_config(tmp_path, "plain", PLAIN))
    plan = cache.load_plan(cfg)
    assert plan.data == []
    assert str((tmp_path / "workflow" / "Snakefile").resolve()) in plan.reads
    chosen = layout.choose_layout(cfg, plan)
    assert (chosen.name, "only the workflow's own files" in chosen.reason) == (layout.JOB_TASKS, True)
    forced = load_config(_config(tmp_path, "forced", PLAIN, workflow_extra=", layout: mapped"))
    assert layout.choose_layout(forced, cache.load_plan(forced)).name == layout.MAPPED


def test_a_rule_over_max_map_length_is_refused_naming_the_setting(tmp_path: Path) -> None:
    text = PLAIN.replace('input: "out/a.txt"', 'input: expand("out/{n}.txt", n=range(5))')
    cfg = load_config(_config(tmp_path, "many", text, workflow_extra=", layout: mapped"))
    plan = cache.load_plan(cfg)
    with pytest.raises(
        ConfigError, match=r"rule 'make' has 5 jobs, more than Airflow's `\[core\] max_map_length` \(4\)"
    ):
        layout.check_mapped(cfg, plan, max_map_length=4)
    layout.check_mapped(cfg, plan, max_map_length=5)


def test_a_run_whose_jobs_need_a_rule_task_the_dag_lacks_fails_clearly(tmp_path: Path) -> None:
    cfg = load_config(_config(tmp_path, "plain2", PLAIN, workflow_extra=", layout: mapped"))
    plan = cache.load_plan(cfg)
    maps = layout.expansion(plan, layout.rule_edges(plan), "cfg.yaml")
    assert maps == {"make": [{"job_id": "make", "wildcards_label": "name=a"}]}
    with pytest.raises(SmakerError, match=r"belongs to rule task 'make', which this DAG has not.*next parse"):
        layout.expansion(plan, {"other": []}, "cfg.yaml")


def test_validate_and_plan_say_which_layout_and_why(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from smaker_airflow.cli.main import main

    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "x.csv").write_text("1\n")
    path = _config(tmp_path / "p", "shown", LANDING, f"config: {{landing: {landing}}}\n")
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "layout mapped: planning read data (folder " in out and str(landing.resolve()) in out
    assert main(["plan", str(path), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["layout"]["name"] == "mapped"


def test_a_mapped_dag_parses_from_a_rule_summary_of_the_plan(tmp_path: Path) -> None:
    text = PLAIN.replace('input: "out/a.txt"', 'input: expand("out/{n}.txt", n=range(30))')
    cfg = load_config(_config(tmp_path, "summary", text, workflow_extra=", layout: mapped"))
    plan = cache.load_plan(cfg)
    summary = cache.load_dag_plan(cfg)
    assert len(plan.jobs) == 30 and len(summary.jobs) == 1
    assert summary.rule_jobs == {"make": 30}
    assert layout.rule_edges(summary) == layout.rule_edges(plan)
    assert cache.summary_path(cfg).is_file()
    assert cache.load_dag_plan(cfg) == summary  # read back from its file
    with pytest.raises(ConfigError, match="has 30 jobs"):
        layout.check_mapped(cfg, summary, max_map_length=29)


def test_a_mapped_dag_is_not_replanned_at_parse_when_only_data_changed(tmp_path: Path) -> None:
    """Each mapped run plans at its start; a parse reads the rule summary until the sources change."""
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "d1.csv").write_text("a\n")
    cfg = load_config(_config(tmp_path / "p", "daily", LANDING, f"config: {{landing: {landing}}}\n"))
    summary = cache.load_dag_plan(cfg)
    assert summary.rule_jobs == {"count_rows": 1, "report": 1}
    (landing / "d2.csv").write_text("b\n")
    assert cache.read(cfg) is None  # the plan is stale...
    assert cache.load_dag_plan(cfg) == summary  # ...the DAG's rules are not: no planning at parse
    cache.write(cfg, cache.load_plan(cfg))  # what `prepare` does when the rule graph changed
    assert cache.load_dag_plan(cfg).rule_jobs == {"count_rows": 2, "report": 1}
