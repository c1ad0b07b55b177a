"""Running a student's code in a child process, so that only the checker gives the verdict.

The child is a fork of the checker (it already holds the student's function and the cases, nothing is
imported again). It runs one step at a time and sends each result back; the parent waits at most
LIMIT seconds for each. What the student's code can do to a process stays in the child: sys.exit(),
exit() and os._exit() end the child, not the checker; an endless loop is killed at the limit; a memory
blow-up meets a MemoryError at MEMORY bytes more than the checker holds. Where fork is missing
(Windows), the steps run in this process and only exceptions are caught.
"""
import multiprocessing
import pickle
import sys

LIMIT = 10.0                 # seconds one case may take
MEMORY = 2 << 30             # bytes of address space the child may add to what the checker holds


class Outcome:
    """What one step did: returned `value`, or raised (`error` and `where`, the student's line), or
    did not come back (`ended`: why the child stopped)."""

    def __init__(self, value=None, error=None, where="", kind=None, ended=None):
        self.value, self.error, self.where, self.kind, self.ended = value, error, where, kind, ended

    @property
    def ok(self):
        return self.error is None and self.ended is None


class Unsent:
    """A returned value that cannot travel back from the child (a generator, a lambda): its type only."""

    def __init__(self, value):
        self.described = f"a {type(value).__name__}"


def exit_text(code):  # SystemExit's code -> what the student's code called
    return f"SystemExit({code!r}): your code called sys.exit({'' if code is None else repr(code)}) or exit(); " \
           "the checker decides when a check is over, not the function"


def run_step(step, name_error):
    """step() -> Outcome, any exception (SystemExit included) caught and named by name_error(error)."""
    try:
        return Outcome(step())
    except NotImplementedError as error:
        return Outcome(error=str(error), where=name_error(error)[1], kind="not written")
    except SystemExit as error:
        _, where = name_error(error)
        return Outcome(error=exit_text(error.code), where=where, kind="exit")
    except MemoryError as error:
        _, where = name_error(error)
        return Outcome(error=f"MemoryError: your function asked for more memory than the checker allows "
                             f"({MEMORY >> 30} GiB more than it holds){': ' + str(error) if str(error) else ''}",
                       where=where, kind="memory")
    except BaseException as error:   # the student's bug: KeyboardInterrupt from their code included
        message, where = name_error(error)
        return Outcome(error=message, where=where, kind="error")


def run_isolated(steps, name_error, limit=None):
    """Yields an Outcome for each step in order; after one that did not come back, no more."""
    limit = LIMIT if limit is None else limit
    if "fork" not in multiprocessing.get_all_start_methods():
        for step in steps:
            yield run_step(step, name_error)
        return
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    sys.stdout.flush()
    sys.stderr.flush()
    child = context.Process(target=_child, args=(steps, name_error, send), daemon=True)
    child.start()
    send.close()
    try:
        for number in range(len(steps)):
            if not receive.poll(limit):
                if child.is_alive():
                    yield Outcome(ended=f"did not return within {limit:g} s (the checker's limit per case): "
                                        "an endless loop, or far too much work for these small inputs")
                    return
            try:
                outcome = receive.recv()
            except (EOFError, OSError):
                child.join(5)
                yield Outcome(ended=ended_text(child.exitcode))
                return
            yield outcome
            if outcome.kind == "memory":   # the next cases would only blow up again, slowly
                return
    finally:
        receive.close()
        if child.is_alive():
            child.kill()
        child.join(5)


def ended_text(code):
    if code is not None and code < 0:
        import signal
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
        return (f"ended the process with signal {name}" +
                (" (out of memory: the system stopped it)" if name == "SIGKILL" else ""))
    return (f"ended the process (os._exit({code}) or the like) before returning: the checker decides when a check "
            "is over, not the function")


def _child(steps, name_error, send):
    try:
        import resource
        used = _address_space()
        if used:
            resource.setrlimit(resource.RLIMIT_AS, (used + MEMORY, resource.getrlimit(resource.RLIMIT_AS)[1]))
    except (ImportError, ValueError, OSError):
        pass
    for step in steps:
        outcome = run_step(step, name_error)
        try:
            send.send(outcome)
        except (pickle.PicklingError, TypeError, AttributeError):
            outcome.value = Unsent(outcome.value)
            send.send(outcome)
        sys.stdout.flush()
    send.close()


def _address_space():  # bytes of virtual memory this process holds now (Linux), else 0
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
