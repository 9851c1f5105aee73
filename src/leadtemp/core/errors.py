"""Every error leadtemp anticipates: each one becomes a one-line message and exit code 2 at the CLI."""


class LeadtempError(ValueError):
    """Base of the anticipated errors: the message names what is wrong and where."""


class ConfigError(LeadtempError):
    """params.yaml is missing, malformed or has a value out of range; or an option is wrong."""


class SchemaError(LeadtempError):
    """Input data breaks the contract; the message names file, column, count and example rows."""


class NotEnoughHistory(LeadtempError):
    """Too few labelled cutoffs for the time-ordered splits."""


class TrainingDataError(LeadtempError):
    """The data cannot support an honest training run (e.g. a slice without conversions)."""


class StorageError(LeadtempError):
    """A file, folder or database cannot be read or written: unreachable, locked, no driver, permission, disk full."""


class RunLocked(LeadtempError):
    """Another run with the same inputs and output holds the lock of their working folder."""
