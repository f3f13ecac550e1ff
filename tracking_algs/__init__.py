"""GNN track finding, fitting, simulation and performance, built on :mod:`inference_iface`."""
