"""Keep reads whose quality is at least params.min_quality; count what was dropped."""

kept, dropped = [], 0
with open(snakemake.input[0]) as reads:  # noqa: F821 (snakemake is given by script:)
    for line in reads:
        if int(line.split()[0]) >= snakemake.params.min_quality:  # noqa: F821
            kept.append(line)
        else:
            dropped += 1
with open(snakemake.output[0], "w") as out:  # noqa: F821
    out.writelines(kept)
with open(snakemake.log[0], "w") as log:  # noqa: F821
    log.write(f"dropped {dropped}\n")
