"""Options of the built-in Kalman fitter (the ``[fitting.kalman]`` table)."""

from __future__ import annotations

import attrs
from attrs import validators as v

from inference_iface.options import finite, integer
from tracking_algs.magnetic_field import Stepping


@attrs.frozen(kw_only=True)
class KalmanConfig:
    """How :class:`~tracking_algs.fitting.kalman.KalmanFitter` fits.

    - ``outlier_chi2_cut_1d`` / ``outlier_chi2_cut_2d``: a hit whose χ² against the prediction from the other hits
      exceeds the cut (χ² quantile at p = 1e-3) is rejected as an outlier;
    - ``max_outlier_refits``: how many times a track is refitted, each time without its worst outlier;
    - ``max_trimmed_hits`` / ``trim_below_pvalue``: a track whose fit failed, whose p-value is still below
      ``trim_below_pvalue`` after its outlier refits or whose outlier refits left it fewer than ``min_trimmed_hits``
      hits is refitted without its first hit, without its last, its first two, its last two, ... up to
      ``max_trimmed_hits`` at either end, and takes the passing fit that keeps the most hits (the trimmed hits
      become outliers); a track that never passes keeps its first fit.  In dense events the track building can
      start a track of the outer layers on another particle's inner hits, or end it on a neighbour's outer hits,
      which drag the seed so far that the outlier rejection removes the wrong hits;
    - ``min_trimmed_hits``: the trimmed variants with fewer hits than this are not fitted, and a variant whose next
      outlier refit would leave fewer fails there.  The default, 5, is the fewest hits a written track holds
      (``[fitting.selection] min_hits``): such a variant could only end as a fit the selection drops, so leaving it
      out changes no written track and saves the fits of the tracks no variant saves (most of the fakes of a dense
      event).  A fit its outlier refits leave with fewer hits than this is trimmed like a failed one;
    - ``min_hits``: tracks with fewer usable hits get status ``TOO_FEW_HITS``;
    - ``min_layers``: so do tracks whose usable hits cross fewer layers (consecutive hits on one layer, the
      overlapping modules a particle crosses there, count as one crossing): the hits of one crossing measure one
      point of the helix and its local direction over a few millimetres, and a fit of fewer than three such points
      has its curvature and perigee from the seed alone (a forward track of 0.2 GeV with four hits on the
      overlapping modules of one pixel disk fits with p = 0.7 and a d0 a thousand of its errors off);
    - ``seed_cov_inflation``: the seed covariance of direction and q/p is multiplied by this (the seed reuses the
      fitted hits);
    - ``seed_position_inflation``: the seed position is the first hit itself, so its variance is the hit's times
      this, wide enough that the first hit is judged by the other hits alone (a neighbouring particle's hit in
      its place is then rejected as an outlier instead of pulling the track);
    - ``seed_sigma_phi``, ``seed_sigma_theta`` (rad), ``seed_sigma_qop_rel`` (relative): seed errors before
      inflation (the seed position error is the first hit's measurement error);
    - ``close_hits_mm`` and ``second_pass_cov_inflation``: a track with two consecutive hits closer than
      ``close_hits_mm`` (two overlapping modules of one layer) is filtered and smoothed a second time, from the
      first pass's smoothed state at its first hit from the seed and every other hit (the second pass judges the
      first hit by the others), with that state's covariance times ``second_pass_cov_inflation``.  Right after two
      such hits the filtered direction and curvature are still poorly known (the pair measures one point twice),
      and the transport to the next layer is linearised about that poor state: the first pass's estimate is then
      up to 1.5 times as wide as its covariance says.  The second pass starts close to the final trajectory; its
      prior adds 1/``second_pass_cov_inflation`` of the tracks' own information (0 for ``close_hits_mm`` turns
      it off);
    - ``multiple_scattering`` and ``mass_gev`` (the mass hypothesis for β in the Highland formula and the
      energy loss);
    - ``energy_loss``: the mean ionisation energy loss of every surface crossed (the Bethe formula in silicon,
      :mod:`tracking_algs.energy_loss`), taken from q/p after each hit's update and given back on the way in to
      the perigee; off by default, as in the simulation (``[simulation] energy_loss``);
    - ``step_tolerance_mm`` and ``max_step_pieces``: in a non-uniform field, a step whose midpoint helix would
      miss the Lorentz force by more than ``step_tolerance_mm`` is taken in up to ``max_step_pieces`` pieces
      (:class:`~tracking_algs.magnetic_field.Stepping`; ``max_step_pieces`` 1 or ``step_tolerance_mm`` 0: one step
      per surface), as the simulation does (``[simulation] step_tolerance_mm``);
    - ``batch_size``: tracks advanced together (memory grows linearly with it);
    - ``processes``: worker processes that share the tracks of an event (:mod:`~tracking_algs.fitting.processes`;
      1: every fit in the calling process; 0: one per usable core).  An event is dealt out to as many of them as
      get ``min_tracks_per_process`` tracks each, and fitted in the calling process where that is fewer than two.
      The workers start at the first event dealt out and stay until the fitter is closed; the results do not depend
      on the number.  A daemonic process (a Dask worker) fits in itself.
    """

    outlier_chi2_cut_1d: float = attrs.field(default=10.83, validator=[finite, v.gt(0.0)])
    outlier_chi2_cut_2d: float = attrs.field(default=13.82, validator=[finite, v.gt(0.0)])
    max_outlier_refits: int = attrs.field(default=3, validator=[integer, v.ge(0)])
    max_trimmed_hits: int = attrs.field(default=3, validator=[integer, v.ge(0)])
    min_trimmed_hits: int = attrs.field(default=5, validator=[integer, v.ge(3)])
    trim_below_pvalue: float = attrs.field(default=1e-3, validator=[finite, v.ge(0.0), v.le(1.0)])
    min_hits: int = attrs.field(default=3, validator=[integer, v.ge(3)])
    min_layers: int = attrs.field(default=3, validator=[integer, v.ge(1)])
    seed_cov_inflation: float = attrs.field(default=100.0, validator=[finite, v.gt(0.0)])
    seed_position_inflation: float = attrs.field(default=1e4, validator=[finite, v.gt(0.0)])
    seed_sigma_phi: float = attrs.field(default=0.01, validator=[finite, v.gt(0.0)])
    seed_sigma_theta: float = attrs.field(default=0.01, validator=[finite, v.gt(0.0)])
    seed_sigma_qop_rel: float = attrs.field(default=0.1, validator=[finite, v.gt(0.0)])
    close_hits_mm: float = attrs.field(default=20.0, validator=[finite, v.ge(0.0)])
    second_pass_cov_inflation: float = attrs.field(default=100.0, validator=[finite, v.gt(1.0)])
    multiple_scattering: bool = attrs.field(default=True, validator=v.instance_of(bool))
    energy_loss: bool = attrs.field(default=False, validator=v.instance_of(bool))
    step_tolerance_mm: float = attrs.field(default=0.05, validator=[finite, v.ge(0.0)])
    max_step_pieces: int = attrs.field(default=4, validator=[integer, v.ge(1)])
    mass_gev: float = attrs.field(default=0.13957, validator=[finite, v.ge(0.0)])
    batch_size: int = attrs.field(default=4096, validator=[integer, v.ge(1)])
    processes: int = attrs.field(default=1, validator=[integer, v.ge(0)])
    min_tracks_per_process: int = attrs.field(default=1000, validator=[integer, v.ge(1)])

    @property
    def stepping(self) -> Stepping:
        """How finely the fit follows a track through a non-uniform field."""
        return Stepping(self.step_tolerance_mm, self.max_step_pieces)
