rule report:
    input:
        expand("results/filtered/{sample}.txt", sample=SAMPLES),
    output:
        "results/report.txt",
    shell:
        "for f in {input}; do echo $f $(wc -l < $f); done > {output}"
