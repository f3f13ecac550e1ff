"""The tracking chain packaged for Triton: the chain as one Python-backend model, the ensemble steps, and the
repository writer (``trkx repo add-tracking``).  The one place of the tracking package that imports :mod:`backends`."""
