"""Sub-commands of ``trkx`` (see :mod:`tracking_algs.cli`)."""
