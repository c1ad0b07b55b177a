"""An int8 worker process (fast/processes.py starts it): `python -m minineo.fast.worker`.

It reads one request a line on stdin and answers each on stdout, "ok" or "error: why":
    io <name>                                   the shared buffer is <name> (first, then a bigger one)
    weight <offset> <rows> <cols> <inode> <path>  the next int8 weight: [rows, cols] at <offset> in <path>
    product <weight> <m> <rows> <t0> <t1> <cast> <form>
                                                tiles t0..t1 (<rows> rows each) of x @ q.T, x [m, cols]
                                                at the start of the buffer, y [m, rows of q] after it
"""
import os
import signal
import sys
from multiprocessing import resource_tracker, shared_memory

import numpy as np

from ..errors import MinineoError
from .choices import Choices
from .int8 import Int8Weight
from .processes import y_offset


def attach(name):  # the main process owns the buffer and removes it at its end; this process must not
    try:
        return shared_memory.SharedMemory(name=name, track=False)
    except TypeError:   # Python < 3.13 has no track=False: take it off this process's resource tracker
        buffer = shared_memory.SharedMemory(name=name)
        resource_tracker.unregister(buffer._name, "shared_memory")
        return buffer


def serve(lines=sys.stdin, out=sys.stdout):
    """Answers each line of `lines` with "ok" (or "error: why") on `out`, until its end."""
    io, files, weights, choices = None, {}, [], {}
    for line in lines:
        kind, *args = line.split(maxsplit=5 if line.startswith("weight") else -1)
        try:
            if kind == "io":
                if io is not None:
                    io.close()
                io = attach(args[0])
            elif kind == "weight":   # weight <offset> <rows> <cols> <inode> <path: the rest of the line>
                offset, n_out, n_in, inode, path = *map(int, args[:4]), args[4].rstrip("\n")
                if (path, inode) not in files:
                    if os.stat(path).st_ino != inode:   # replaced since the main process mapped it
                        raise MinineoError(f"{path} was replaced after the main process mapped it")
                    files[path, inode] = np.memmap(path, dtype=np.uint8, mode="r")
                q = files[path, inode][offset:offset + n_out * n_in].view(np.int8).reshape(n_out, n_in)
                weights.append(Int8Weight(np.asarray(q), np.ones(n_out, np.float32)))
            else:    # product <weight> <m> <rows per tile> <first tile> <end tile> <cast> <form>
                assert kind == "product", f"unknown request {kind!r}"
                index, m, rows, t0, t1 = map(int, args[:5])
                chosen = choices.setdefault((args[5], args[6]), Choices(int8_cast=args[5], tile_form=args[6]))
                weight = weights[index]
                n_out, n_in = weight.shape
                x2 = np.ndarray((m, n_in), np.float32, io.buf)
                y = np.ndarray((m, n_out), np.float32, io.buf, y_offset(m, n_in))
                for i in range(t0, t1):
                    weight.tile(i, rows, x2, y, chosen)
            out.write("ok\n")
        except Exception as e:   # the main process says it on stderr, and computes the tiles itself
            out.write(f"error: {type(e).__name__}: {e}\n".replace("\n", " ").strip() + "\n")
        out.flush()
    if io is not None:
        io.close()


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C is the main process's to handle; it closes our input
    serve()
