"""Finding a test's processes by a marker in their environment (Python standard library only).

mpirun puts its ranks in process groups of their own, so a test that must signal or reap them
marks their environment (VARIABLE=MARK) when it starts the job and looks them up in /proc.
"""
from pathlib import Path


def marked(variable, mark):
    """Every process whose environment holds VARIABLE=MARK: {pid: (rank or None, command name)}."""
    found = {}
    want = f"{variable}={mark}".encode()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            env = (d / "environ").read_bytes().split(b"\0")
            if want not in env:
                continue
            comm = (d / "comm").read_text().strip()
        except OSError:
            continue
        rank = next((int(e.split(b"=", 1)[1]) for e in env if e.startswith(b"OMPI_COMM_WORLD_RANK=")), None)
        found[int(d.name)] = (rank, comm)
    return found
