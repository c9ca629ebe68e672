"""The exceptions users see.  They live at the bottom layer so every layer can raise them."""


class LlgradError(Exception):
    """Base class of every error llgrad raises on purpose."""


class ShapeError(LlgradError, ValueError):
    """Shapes that do not fit an operation (or a compiled function's signature)."""


class DTypeError(LlgradError, TypeError):
    """A dtype llgrad does not compute with, or a dtype an operation does not accept."""


class UnsupportedError(LlgradError, NotImplementedError):
    """A numpy function or Python construct that llgrad cannot trace."""


class GradientError(LlgradError, TypeError):
    """A request for a gradient that does not exist (non-scalar output, integer input)."""


class LoopLimitError(LlgradError, RuntimeError):
    """A ``while_loop`` that needed more steps than its ``max_steps`` (raised after the
    native call, which stopped the loop rather than write past its tape)."""


#: how the message of a ``while_loop`` whose heap tape could not grow begins: the
#: status word that reports a spent ``max_steps`` reports it too, raised as MemoryError
TAPE_MEMORY = "out of memory:"
