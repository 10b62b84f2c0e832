SOURCES = ["a", "b"]


def source_file(index):
    # A bug in the user's own Python: index 2 does not exist.
    return f"data/{SOURCES[index]}.csv"


rule all:
    input:
        source_file(2),
