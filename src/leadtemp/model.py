"""Compatibility: models logged before the layered layout pickle ``leadtemp.model.LeadTempModel``.

The pyfunc lives in :mod:`leadtemp.adapters.pyfunc`; this name keeps those models loading.
"""

from leadtemp.adapters.pyfunc import LeadTempModel

__all__ = ["LeadTempModel"]
