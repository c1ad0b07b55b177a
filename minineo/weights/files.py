"""Opening files that came from the internet: only regular files, read up to a bound, and every
failure as one MinineoError naming the file (a directory, a FIFO, a broken link, a link loop, no
permission) instead of an OSError, a hang on a pipe, or a read of /dev/zero that never ends."""
import errno
import os
import reprlib
import stat
from pathlib import Path

from ..errors import MinineoError


def shown(name):  # a name read from a file, safe to print on one line
    return name if isinstance(name, str) and name.isprintable() else ascii(name)


def short(value):  # a value read from a file, shown in a message: one line, at most ~80 characters
    return reprlib.repr(value)


def json_kind(value):  # how JSON names a parsed value's type, with an article
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


FILE_KINDS = [(stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
              (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")]


def not_regular(path, mode):
    kind = next((kind for test, kind in FILE_KINDS if test(mode)), "something other than a regular file")
    return MinineoError(f"{path}: is {kind}, not a file")


def os_error(path, e, missing="no such file"):  # an OSError while opening or reading path -> one line
    if e.errno == errno.ENOENT and os.path.islink(path):
        return MinineoError(f"{path}: a broken symbolic link (what it points to does not exist)")
    if e.errno in (errno.ENOENT, errno.ENOTDIR):
        return MinineoError(f"{path}: {missing}")
    if e.errno == errno.ELOOP:
        return MinineoError(f"{path}: a symbolic link loop (too many levels of symbolic links)")
    if e.errno in (errno.EACCES, errno.EPERM):
        return MinineoError(f"{path}: permission denied (the file is not readable)")
    return MinineoError(f"{path}: cannot be read ({(e.strerror or type(e).__name__).lower()})")


NONBLOCK = getattr(os, "O_NONBLOCK", 0)   # POSIX; Windows has no FIFOs to wait on


def open_regular_file(path, missing="no such file"):
    """`path` opened for binary reading, or a one-line MinineoError if it is missing, unreadable, a
    symlink loop, or anything but a regular file. Never blocks: a FIFO is refused before it is opened,
    and the open itself is non-blocking, so a FIFO swapped in between the two is refused, not waited on."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            raise not_regular(path, mode)
        f = open(path, "rb", opener=lambda p, flags: os.open(p, flags | NONBLOCK))
    except OSError as e:
        raise os_error(path, e, missing) from None
    try:
        mode = os.fstat(f.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise not_regular(path, mode)
        if NONBLOCK:
            os.set_blocking(f.fileno(), True)
    except BaseException:
        f.close()
        raise
    return f


def read_small_file(path, limit, missing="no such file"):
    """The bytes of a small file (config.json, an index), checked as open_regular_file checks it; one
    bigger than `limit` is refused by its size, before any of it is read."""
    with open_regular_file(path, missing) as f:
        size = os.fstat(f.fileno()).st_size
        # read(n) allocates n bytes before reading: ask for what fstat says is there (and one more, to
        # see a file that grew), never for the limit
        try:
            data = f.read(size + 1) if size <= limit else b""
        except OSError as e:   # a disk error
            raise os_error(path, e, missing) from None
    if size > limit or len(data) > limit:
        raise MinineoError(f"{path}: {max(size, len(data))} bytes, too big for what it should hold "
                           f"(at most {limit})")
    return data
