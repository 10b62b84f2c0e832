SOURCES = ["a", "b"]


def pick_source(index):
    raise ValueError(f"no source number {index}")


rule all:
    input: pick_source(3)
