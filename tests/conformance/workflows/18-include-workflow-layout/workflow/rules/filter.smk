rule merge_units:
    input:
        units_of,
    output:
        "results/merged/{sample}.txt",
    conda:
        "../envs/tools.yaml"
    shell:
        "cat {input} > {output}"


rule filter_quality:
    input:
        "results/merged/{sample}.txt",
    output:
        "results/filtered/{sample}.txt",
    params:
        min_quality=config["min_quality"],
    log:
        "logs/filter/{sample}.log",
    conda:
        "../envs/tools.yaml"
    script:
        "../scripts/filter_quality.py"
