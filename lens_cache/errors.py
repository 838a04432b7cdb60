"""Named errors, grouped by the stage that raises them. Each subclasses a builtin, so callers
can catch either, and carries the exit code the command line ends with (`run_cli`):

- 2 (`EXIT_BAD_INPUT`): the command or its input is wrong; fix it and rerun.
- 3 (`EXIT_ENVIRONMENT`): the machine is in the way: a full or read-only disk, memory, a port,
  a package, damaged files.
- 4 (`EXIT_NETWORK`): the network or the Hub failed; rerunning the same command resumes.

`LENS_CACHE_DEBUG=1` shows the traceback instead of the one-line message.
"""

from __future__ import annotations

import errno

EXIT_BAD_INPUT = 2
EXIT_ENVIRONMENT = 3
EXIT_NETWORK = 4


class LensCacheError(Exception):
    """Base class of every error lens_cache raises on purpose."""

    exit_code = EXIT_BAD_INPUT


class EnvironmentFailure(LensCacheError):
    """Mixin of the errors that come from the machine rather than from the input."""

    exit_code = EXIT_ENVIRONMENT


class NetworkFailure(LensCacheError):
    """Mixin of the errors that come from the network or a remote service."""

    exit_code = EXIT_NETWORK


# --- writing (every stage that writes) ------------------------------------------------------


class StoreWriteError(EnvironmentFailure, OSError):
    """A file of the store could not be written (no space left, read-only, permission denied).

    Carries the file as `path`; finished prompts are kept and its temp file is removed, so
    rerunning the same command after freeing space resumes.
    """

    def __init__(self, message: str, path=None, errno_: int | None = None):
        super().__init__(message)
        self.path = path
        self.errno = errno_

    @classmethod
    def from_oserror(cls, path, error: OSError) -> StoreWriteError:
        """The one-line message for `error` met while writing `path`: what, why, what to do."""
        cause = error.strerror or str(error)
        advice = _WRITE_ADVICE.get(error.errno, "check the disk")
        message = (
            f"cannot write {path}: {cause}; {advice}, then rerun the same command "
            "(finished prompts are kept)"
        )
        return cls(message, path, error.errno)


# An OSError with one of these is the machine's state (disk, permissions), not a bug.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})
_WRITE_ADVICE = {
    errno.ENOSPC: "free space on that disk or choose another --save-path",
    errno.EDQUOT: "free space within your disk quota or choose another --save-path",
    errno.EROFS: "the filesystem is read-only: remount it or choose another --save-path",
    errno.EACCES: "make the folder writable or choose another --save-path",
    errno.EPERM: "make the folder writable or choose another --save-path",
}


# --- options (every stage) -------------------------------------------------------------------


class InvalidOptionError(LensCacheError, ValueError):
    """An option (flag or keyword argument) has a value it cannot take: an unknown hook kind,
    pool, dtype or `--on-long` choice, a number out of range."""


class BatchingError(InvalidOptionError):
    """A batch limit (`--batch-size`, `--token-budget`, ...) is not a positive number."""


class LayerSelectionError(InvalidOptionError):
    """`--layers` names a layer the model does not have, or cannot be parsed."""


class UnknownHookError(InvalidOptionError):
    """A hook name that is not one lens_cache stores."""


class TopKError(InvalidOptionError):
    """`--top-k` is not between 1 and the model's vocabulary size."""


class NotPerTokenHookError(UnknownHookError):
    """A hook point whose tensor is not one vector per token (e.g. `[heads, T, T]` scores)."""


# --- prompts and datasets --------------------------------------------------------------------


class PromptsError(LensCacheError, ValueError):
    """The prompt source cannot be read or holds an invalid prompt."""


class PromptsFileNotFoundError(PromptsError, FileNotFoundError):
    """The prompts file does not exist."""


class MalformedPromptError(PromptsError):
    """A prompt line is not valid JSON or not UTF-8, lacks `text`, or is empty.

    Carries the file and the 1-based line number.
    """

    def __init__(self, message: str, path: str | None = None, line: int | None = None):
        super().__init__(message)
        self.path = path
        self.line = line


class PromptTooLongError(PromptsError):
    """A prompt has more tokens than the model's context (with `--on-long fail`)."""


class DatasetSourceError(PromptsError):
    """A dataset cannot be read: unknown file type, unreadable file, unsupported values."""


class DatasetNotFoundError(DatasetSourceError, FileNotFoundError):
    """Neither a local file or folder nor a dataset the Hub could give."""


class MissingColumnError(DatasetSourceError, LookupError):
    """The text column or a label column is not in the dataset; the message lists those that are."""


class MissingSplitError(DatasetSourceError, LookupError):
    """The split is not in the dataset; the message lists those that are."""


class DatasetsNotInstalledError(EnvironmentFailure, DatasetSourceError, ImportError):
    """Reading this source needs the `datasets` package, which is not installed."""


# --- models ----------------------------------------------------------------------------------


class ModelLoadError(LensCacheError, ValueError):
    """The model cannot be found or loaded."""


class ModelNameError(LensCacheError, ValueError):
    """A model's name cannot be a folder of the store (it is empty, a path, or reserved)."""


class UnsupportedModelError(LensCacheError, ValueError):
    """The model cannot be exported correctly (e.g. bidirectional attention)."""


class HookNotFiredError(LensCacheError, RuntimeError):
    """A hook we export did not fire, or fired with an unexpected shape."""


class RankFailedError(EnvironmentFailure, RuntimeError):
    """Under torchrun, another rank failed: this one stops and names it (`rank`)."""

    def __init__(self, message: str, rank: int = -1):
        super().__init__(message)
        self.rank = rank


# --- exporting -------------------------------------------------------------------------------


class SavePathError(LensCacheError, OSError):
    """The save path cannot be created or written."""


class SettingsMismatchError(LensCacheError, ValueError):
    """The store already holds this model exported with other settings."""


class OutOfMemoryError(EnvironmentFailure, MemoryError):
    """A single prompt does not fit in memory even as a batch of one."""


# --- reading and looking after a store -------------------------------------------------------


class StoreNotFoundError(LensCacheError, FileNotFoundError):
    """The save path holds no lens_cache store, or a file the store lists is missing."""


class StoreCorruptError(EnvironmentFailure, ValueError):
    """A stored file does not match what prompt.json or model_cfg.json say about it."""


class DamagedFileError(StoreCorruptError):
    """A stored file cannot be read (truncated, garbled): the message names it and the cure
    (`cache verify`, then the export with `--force`). Carries the file as `path`."""

    def __init__(self, message: str, path=None):
        super().__init__(message)
        self.path = path


class StoreLinkError(DamagedFileError):
    """A symbolic link inside a store (a file or a folder): refused, never followed, so that a
    store received from elsewhere cannot make a command read or write outside its root.
    Skipped and reported like any damaged file. Carries the link as `path`."""


class FileFormatError(ValueError):
    """A file is not what its format says: a header longer than the file, an extent past its
    end, a shape other than the one expected. Raised by `lens_cache.formats` after reading at
    most the header; `lens_cache.damage.reading` turns it into a `DamagedFileError` naming the
    file."""


class ActivationsMissingError(LensCacheError, FileNotFoundError):
    """The store, model, prompt or kind of activation asked for is not on disk.

    The message ends with the command that would export it.
    """


class LayerNotStoredError(LayerSelectionError):
    """A requested layer is not stored; the message lists the layers that are."""


class HeadSelectionError(LensCacheError, IndexError):
    """A requested head is out of range for the stored patterns."""


class ModelNotInStoreError(LensCacheError, FileNotFoundError):
    """`clear --model` names a model the store does not hold."""


class DetectorError(LensCacheError, ValueError):
    """An unknown head detector, or a detector whose target is not a causal ``[T, T]`` mask."""


class UserMetricError(LensCacheError, ValueError):
    """A user metric (`lens_cache.metric`) that is misnamed, cannot be loaded, raised, or
    returned a value of the wrong kind; `name` is the metric's name when known."""

    def __init__(self, message: str, name: str | None = None):
        super().__init__(message)
        self.name = name


# --- pooled residuals ------------------------------------------------------------------------


class PooledMissingError(LensCacheError, FileNotFoundError):
    """No pooled dataset for this model, hook and pool; the message says what to run."""


class MissingLabelError(LensCacheError, LookupError):
    """The label column asked for is not in the pooled dataset; the message lists those that are."""


# --- viewer ----------------------------------------------------------------------------------


class ServeError(EnvironmentFailure, OSError):
    """`python -m lens_cache.serve` cannot bind its address (port taken, not an address here)."""


# --- Hub -------------------------------------------------------------------------------------


class HubRepoIdError(LensCacheError, ValueError):
    """`--repo` is not of the form ORG/NAME."""


class HubSelectionError(LensCacheError, ValueError):
    """A selection flag names something that is not there (model, prompt, head, kind)."""


class NothingSelectedError(HubSelectionError):
    """The selection matches no prompt or no tensor: there is nothing to push or pull."""


class NotALensCacheDatasetError(LensCacheError, ValueError):
    """The repo has no (readable) `lens_cache.json` manifest, or one of a newer format."""


class UnsafeRepoPathError(LensCacheError, ValueError):
    """A repo names a file, model or prompt hash that would land outside the save path.

    Carries the offending name as `name`.
    """

    def __init__(self, message: str, name: str = ""):
        super().__init__(message)
        self.name = name


class HubTokenError(LensCacheError, PermissionError):
    """No Hugging Face token, or the Hub rejected it (401)."""


class HubPermissionError(LensCacheError, PermissionError):
    """The token may not write to this repo or namespace (403): someone else owns it."""


class HubRepoNotFoundError(LensCacheError, FileNotFoundError):
    """The repo or revision does not exist, or is private and the token cannot see it."""


class HubIntegrityError(LensCacheError, ValueError):
    """A downloaded file does not match the size, sha256 or shapes the manifest promises (the
    repo's data is bad: rerunning does not help)."""


class HubTransferError(NetworkFailure, ConnectionError):
    """The network or the Hub failed mid-transfer; rerunning the same command resumes."""
