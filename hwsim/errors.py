"""Error types the CLI maps to exit codes: bad input is 2, a failed numerical check is 1."""

from pathlib import Path


class HwsimError(Exception):
    """Bad input from the user (file, node, option, key). One line; the CLI exits with code 2."""


class UnsupportedOpError(HwsimError):
    """An ONNX op the frontend has no converter for."""

    def __init__(self, op_type: str, node_name: str, domain: str, opset: int):
        where = f"{domain}::{op_type}" if domain else op_type
        super().__init__(f"unsupported op {where} (node '{node_name}', opset {opset})")
        self.op_type = op_type


class VerificationError(Exception):
    """A built artifact disagrees with the reference; the CLI exits with code 1."""


class IRError(Exception):
    """The IR broke an invariant (a bug in a frontend or pass, not user input)."""


class CachedFailure(Exception):
    """This exact build (same cache key) failed before; the message is that failure's. --force retries it."""


def describe(e: BaseException) -> str:
    """One line: the exception's type and first line, or where it was raised when it says nothing (a cached
    failure is its recorded line)."""
    import traceback

    if isinstance(e, CachedFailure):
        return str(e)
    text = str(e).strip().splitlines()
    if text:
        return f"{type(e).__name__}: {text[0]}"[:500]
    frame = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
    return f"{type(e).__name__} at {Path(frame.filename).name}:{frame.lineno}" if frame else type(e).__name__
