"""The synthetic CRM of docs/domain.md: leads, interactions and the truth (the oracle), seeded."""

from leadtemp.simulate.world import SHIFT_SOURCE, SimulatedData, simulate

__all__ = ["SHIFT_SOURCE", "SimulatedData", "simulate"]
