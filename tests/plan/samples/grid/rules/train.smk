rule train:
    input:
        "data/{source}/clean.csv",
    output:
        model="train/{source}/C~{C}/model.pkl",
        metrics="train/{source}/C~{C}/metrics.json",
    log:
        "logs/train/{source}/C~{C}.log",
    threads: 8
    resources:
        mem_mb=lambda wildcards, attempt: 1000 * attempt,
        runtime=30,
        gpu=1,
        license="matlab",
    retries: 2
    priority: 7
    shell:
        "touch {output}"


rule summarize:
    input:
        rules.train.output.metrics,
    output:
        "reports/{source}/C~{C}/summary.txt",
    params:
        FINAL="summary.txt",
    shell:
        "touch {output}"
