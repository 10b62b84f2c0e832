# Ingest: the day's data slice. Generated (no download) so the example runs anywhere;
# the run date seeds it, so each daily run trains on "its" data.
from smaker_airflow import Stage

ingest = Stage(config, "ingest", uses=["n_samples"])


rule ingest:
    output:
        ingest.out("data.csv"),
    params:
        n_samples=ingest.param("n_samples"),
        run_date=config.get("run_date", "1970-01-01"),
    log:
        ingest.log("ingest.log"),
    resources:
        mem_mb=200,
        runtime=5,
    script:
        "scripts/ingest.py"
