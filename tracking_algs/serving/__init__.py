"""The tracking chain packaged for Triton: the chain as one Python-backend model, the ensemble steps, and the
repository writer (``trkx repo add-tracking``).  With the job and the command line (``trkx repo``, ``trkx serve``),
the only part of the tracking package that imports :mod:`backends`."""
