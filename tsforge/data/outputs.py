"""Where a command may write its output, and how the finished output takes its place.

    from tsforge.data.outputs import check_target, missing_parents, place, writing
    check_target(out, flag="--out", overwrite=True, inputs=[src], replaceable=is_store,
                 what="a tsforge store")        # before any work: UserError if refused
    with writing(out, "--out", made=missing_parents(out, "--out")):
        ...                                     # an OSError in here names `out`, exit 1
        place(tmp, out)                         # the finished output, renamed into place

Users hand tsforge their only copy of a dataset, so `--overwrite` replaces only what a
command of the same kind wrote: never the current folder or one that holds it, never an input
or a folder that holds one, never a symbolic link (whose target may lie anywhere), and never
anything that `replaceable` does not recognise. Outputs are written beside their path and
renamed into place; a folder that replaces a folder is swapped with it atomically
(renameat2(RENAME_EXCHANGE) on Linux), so the old one stays until the new one is complete.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from tsforge.errors import UserError

# The file types of forecasts (`tsforge predict --output`), known here so that the command
# line can check an --output before it loads a model.
FORECAST_SUFFIXES = (".csv", ".parquet")
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2
# Faults that more room would fix (the message then says to free some).
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def check_target(
    path: str | os.PathLike,
    *,
    flag: str,
    overwrite: bool,
    inputs: Iterable[str | os.PathLike] = (),
    replaceable: Callable[[Path], bool],
    what: str,
) -> None:
    """Refuse to write `path` (given as `flag`) where that could lose something of the user's.

    A free path is always fine. An existing one needs `overwrite`, and then must not be a
    link, the current folder (or hold it), an input (or hold one), and must be `replaceable`
    (described as `what` in the message)."""
    path = Path(path)
    if not os.path.lexists(path):
        return
    if not overwrite:
        raise UserError(f"{path} already exists: pass --overwrite to replace it or choose another "
                        f"{flag}")  # fmt: skip
    if path.is_symlink():
        raise UserError(
            f"{flag} {path} is a symbolic link: --overwrite does not replace links (their "
            f"target may be anything): name {what} itself or choose another {flag}"
        )
    if within(Path.cwd(), path):
        raise UserError(
            f"{flag} {path} is the current folder or holds it: --overwrite will not replace it; "
            f"choose another {flag}"
        )
    for src in inputs:
        if within(src, path):
            raise UserError(
                f"{flag} {path} is the input {src} or holds it: --overwrite will not replace "
                f"an input; choose another {flag}"
            )
    if not replaceable(path):
        raise UserError(
            f"{flag} {path} is not {what}, so --overwrite will not replace it: remove it "
            f"yourself or choose another {flag}"
        )


def check_file_target(
    path: str | os.PathLike,
    *,
    flag: str,
    suffixes: Iterable[str],
    overwrite: bool,
    inputs: Iterable[str | os.PathLike] = (),
) -> None:
    """`check_target` for an output file: one of `suffixes`, in a folder that exists (a file
    command does not make folders), replacing only a file."""
    path = Path(path)
    suffixes = tuple(suffixes)
    if path.suffix.lower() not in suffixes:
        raise UserError(f"{flag} {path}: name a {' or a '.join(suffixes)} file")
    if not path.parent.is_dir():
        raise UserError(f"{flag} {path}: the folder {path.parent} does not exist: create it "
                        f"first or choose another {flag}")  # fmt: skip
    if path.is_dir() and not path.is_symlink():
        raise UserError(f"{flag} {path} is a folder: name a {' or a '.join(suffixes)} file")
    check_target(path, flag=flag, overwrite=overwrite, inputs=inputs, replaceable=Path.is_file,
                 what="a file")  # fmt: skip


def within(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """Whether `path` is `folder` or lies inside it, links resolved."""
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents


def missing_parents(path: str | os.PathLike, flag: str) -> list[Path]:
    """The folders above `path` that do not exist yet, nearest first, after checking that
    the nearest existing one is a folder."""
    missing = []
    for parent in Path(path).absolute().parents:
        if parent.is_dir():
            return missing
        if os.path.lexists(parent):
            raise UserError(f"{flag} {path}: {parent} is not a folder: choose another {flag}")
        missing.append(parent)
    return missing


def place(tmp: Path, path: Path) -> None:
    """Rename the finished `tmp` to `path`, replacing what `check_target` let through.

    A new path is taken only if still free. A folder swaps with the old folder atomically,
    and the old one (then at `tmp`) is deleted; a file replaces a file atomically."""
    tmp, path = Path(tmp), Path(path)
    if not os.path.lexists(path):
        if not _renameat2(tmp, path, _RENAME_NOREPLACE):
            if os.path.lexists(path):
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path))
            os.rename(tmp, path)
        return
    if not (tmp.is_dir() and path.is_dir() and not path.is_symlink()):
        os.replace(tmp, path)
        return
    if not _renameat2(tmp, path, _RENAME_EXCHANGE):
        # No atomic exchange here: two renames, the old folder put back if the second fails.
        old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(path, old)
        try:
            os.rename(tmp, path)
        except BaseException:
            os.rename(old, path)
            raise
        tmp = old
    shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def writing(
    path: str | os.PathLike,
    flag: str,
    *,
    made: Iterable[Path] = (),
    reads: Callable[[OSError], bool] = lambda err: False,
) -> Iterator[None]:
    """The block that writes `path`: folders `made` for it (nearest first) go again if it
    fails, and an `OSError` in it names `path` (`write_fault`) unless `reads(err)` says it is a
    fault of reading an input, which names that input already."""
    try:
        yield
    except BaseException as err:
        for folder in made:  # each is empty once the one below it is gone
            with contextlib.suppress(OSError):
                Path(folder).rmdir()
        if isinstance(err, OSError) and not reads(err):
            raise write_fault(err, path, flag) from None
        raise


def write_fault(err: OSError, path: str | os.PathLike, flag: str) -> OSError:
    """`err`, raised while writing `path`, as one that names `path` and the way out: the
    command line prints it as one line and exits 1."""
    code = err.errno
    why = os.strerror(code) if code else str(err).splitlines()[0]
    fix = "free some space there or choose another" if code in _FULL else "choose another"
    return OSError(code, f"{why}: {fix} {flag}", str(path))


def _renameat2(src: Path, dst: Path, flags: int) -> bool:
    """renameat2(2) with `flags`; False where the system or the file system lacks it."""
    call = _libc_renameat2()
    if call is None:
        return False
    if call(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(src), None, str(dst))


def _libc_renameat2():
    try:
        call = ctypes.CDLL(None, use_errno=True).renameat2  # glibc >= 2.28
    except (AttributeError, OSError):
        return None
    call.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
    call.restype = ctypes.c_int
    return call
