"""Fast TrackML-like detector simulation: pile-up and signal particles, helix propagation in a solenoid
field with Highland multiple scattering, Gaussian hit smearing, inefficiency and noise."""

from tracking_algs.simulation.config import SimulationConfig
from tracking_algs.simulation.simulate import check_setup, simulate_event, simulate_events

__all__ = ["SimulationConfig", "check_setup", "simulate_event", "simulate_events"]
