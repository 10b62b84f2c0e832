# Catalog fixture: rule make has 3 jobs (the test sets Airflow's max_map_length to 2).
rule all:
    input:
        expand("out/{n}.txt", n=range(3)),


rule make:
    output:
        "out/{n}.txt",
    shell:
        "echo {wildcards.n} > {output}"
