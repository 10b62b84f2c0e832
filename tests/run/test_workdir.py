"""A run folder as the jobs' working directory (smaker_airflow/run/workdir.py)."""

from __future__ import annotations

from pathlib import Path

from airflow._shared.module_loading.file_discovery import find_path_from_directory

from smaker_airflow.config import load_config
from smaker_airflow.plan.model import Plan
from smaker_airflow.run.workdir import prepare_workdir

CONFIG = """
dag_id: linked
workflow: {snakefile: workflow/Snakefile}
"""


def test_run_folders_under_the_dags_folder_do_not_break_dag_discovery(tmp_path: Path) -> None:
    """A run folder links the project; Airflow's walk of a DAGs folder holding both must not loop.

    Airflow follows links and refuses a folder seen twice ("Detected recursive loop"), which
    would hide every DAG of the folder; the runs root's .airflowignore keeps the walk out.
    """
    dags = tmp_path / "dags"
    project = dags / "project"
    (project / "workflow").mkdir(parents=True)
    (project / "workflow" / "Snakefile").write_text('rule a:\n    output: "out/a.txt"\n    shell: "touch {output}"\n')
    (project / "configs").mkdir()
    (project / "configs" / "linked.yaml").write_text(CONFIG)
    (project / "dag_file.py").write_text("# from airflow.sdk import DAG\n")
    cfg = load_config(project / "configs" / "linked.yaml")
    plan = Plan(dag_id="linked", arms=list(cfg.arms), jobs=[], arm_configs={})

    folder = cfg.runs_root / "linked" / "run1"
    prepare_workdir(cfg, folder, plan)

    assert (folder / "workflow").is_symlink()  # the project is linked into the run folder
    found = sorted(Path(p).relative_to(dags) for p in find_path_from_directory(dags, ".airflowignore"))
    assert Path("project/dag_file.py") in found
    assert not [p for p in found if p.parts[:2] == ("project", "runs")]
