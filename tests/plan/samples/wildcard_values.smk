rule all:
    input:
        expand("out/{name}.txt", name=config["names"]),


rule make:
    output:
        "out/{name}.txt",
    shell:
        "touch {output}"
