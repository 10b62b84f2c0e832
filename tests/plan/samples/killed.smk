import os
import signal

print("about to die")
os.kill(os.getpid(), signal.SIGKILL)

rule all:
    output: "x"
