"""The failures refseg expects: each says in one line which input is wrong, what is wrong with
it and what the user can do. The CLI prints them as `refseg: error: ...` and exits with status 2;
anything else is a bug and prints one line that points to `--debug`.

This module imports nothing heavy, so the CLI can check arguments and inputs before torch and
the models load."""

from __future__ import annotations

import contextlib
import signal
import wave
from collections.abc import Iterator


class RefsegError(ValueError):
    """An expected failure with a message for the user (a `ValueError`, as bad values are)."""


class InputError(RefsegError):
    """An input file or folder that cannot be read, or reads as something else than expected."""


class CheckpointError(RefsegError):
    """A checkpoint could not be found, read or matched to the model."""


class ConfigError(RefsegError):
    """A training or model configuration that cannot be read or is inconsistent."""


class Interrupted(BaseException):
    """SIGTERM, raised where the process is, as SIGINT raises `KeyboardInterrupt`, so that every
    staged output is dropped on the way out (a `BaseException`: no `except Exception` swallows it)."""


_stop: type[BaseException] | None = None  # what the last SIGINT / SIGTERM asked for (`on_stop_signal`)


def on_stop_signal(signum: int, frame: object) -> None:
    """Signal handler for SIGINT and SIGTERM: remember the stop, then raise it where the process is.
    A raise that lands inside a callback a library calls from C (PyAV's logging callback prints and
    drops exceptions) is lost there; `raise_if_stopped` raises it again at the next frame."""
    global _stop
    _stop = KeyboardInterrupt if signum == signal.SIGINT else Interrupted
    raise _stop()


def raise_if_stopped() -> None:
    """Raise the stop a signal asked for, if it has not ended the run yet."""
    if _stop is not None:
        raise _stop()


def clear_stop() -> None:
    """Forget a handled stop (a command run in-process after another)."""
    global _stop
    _stop = None


# What parsing a damaged file raises: JSON / CSV / WAV / RLE / numpy errors, absent keys, wrong types.
MALFORMED = (KeyError, IndexError, TypeError, AttributeError, ValueError, EOFError, wave.Error, OSError)


@contextlib.contextmanager
def reading(what: str) -> Iterator[None]:
    """Inside, a failure of parsing `what` (files a user gave: a dataset, ground truth) becomes
    an `InputError` that names it and says what the parser met; refseg's own errors pass."""
    try:
        yield
    except RefsegError:
        raise
    except MALFORMED as err:
        reason = " ".join(str(err).split())[:300]
        raise InputError(f"{what} ({type(err).__name__}: {reason})") from err
