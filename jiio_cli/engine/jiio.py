"""Joint inference and input optimisation: the augmented map and ``jiio_solve``.

One pass of the augmented map F over the stacked state s = [z; x; μ] costs one
evaluation of f and one vector-Jacobian product (see ``lagrangian_grads``):

    z⁺ = z + α_z (f(z, x) − z)
    μ⁺ = μ + α_μ (∇_z ℓ + J_zᵀ μ − μ)
    x⁺ = Π_𝒳( x − α_x · step(∇_x ℓ + J_xᵀ μ) )

A fixed point satisfies the KKT conditions of min_x ℓ(z*(x), x): z is the DEQ fixed
point, μ its adjoint and x is stationary (projected). The map is solved by Anderson
acceleration on s = [z; w·x; μ], where the constant weight w (``x_weight``) scales how
much the x block counts in Anderson's least squares min ‖Σ_i a_i (F(s_i) − s_i)‖²: with
w = 1 the z and μ blocks (thousands of entries per sample against tens or hundreds in
x) dominate the mixing and x's slow last stretch gets little of the acceleration. The
weight changes the iterates, not the fixed points (x = (w·x)/w). α_x may follow a
two-value schedule, and the Anderson history is cleared when it switches because the
map itself changes there.

An optional diagonal preconditioner ``x_scale`` = d > 0 (one factor per entry of x)
changes variables to y = x / d: the x block takes the step α_x · d² ⊙ step(∇_x) and
Anderson sees the block as (w / d) ⊙ x. This is gradient descent and Anderson mixing in
the metric diag(d)⁻², for inputs whose parts have very different curvature (a task
context whose one part modulates the cell and whose other part offsets a linear
read-out). The fixed points are those of the plain map: the step vanishes exactly where
the projected gradient does, for feasible sets that act coordinate by coordinate (none,
a box, an L∞ ball), the only ones it accepts.

After the loop the returned x is projected again (Anderson's affine extrapolation can
leave 𝒳), z is re-solved at that x and μ refined there, both warm-started, so that the
reported z*, μ* and objective belong to the returned, feasible x. (With
``refine_adjoint`` False μ is the loop's, and only its residual is measured there.)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from torch import Tensor

from jiio_cli.engine.anderson import RESIDUAL_FLOOR, SolverConfig, fixed_point_solve
from jiio_cli.engine.constraints import Box, Constraint, LinfBall, NoConstraint, apply_step_rule
from jiio_cli.engine.fixed_point import solve_at
from jiio_cli.engine.problem import InputOptResult, InputProblem, lagrangian_grads
from jiio_cli.engine.state import StateLayout

__all__ = [
    "PAPER_ALPHA_X",
    "JIIOConfig",
    "StepSchedule",
    "augmented_residuals",
    "jiio_solve",
    "x_step_residual",
]


@dataclass(frozen=True)
class StepSchedule:
    """α_x: ``initial`` until ``switch_at``, then ``final``.

    With ``switch_at=None`` the switch happens at max(50, 5T/8) for T = max_iter, the
    rule of the reference implementation.
    """

    initial: float
    final: float | None = None
    switch_at: int | None = None

    def __post_init__(self) -> None:
        if self.initial <= 0 or (self.final is not None and self.final <= 0):
            raise ValueError("step sizes must be positive")

    def switch_iteration(self, max_iter: int) -> int | None:
        """Iteration at which α_x changes, or None if it never does within max_iter."""
        if self.final is None or self.final == self.initial:
            return None
        k = self.switch_at if self.switch_at is not None else max(50, (5 * max_iter) // 8)
        return k if 0 < k < max_iter else None

    def value(self, k: int, max_iter: int) -> float:
        switch = self.switch_iteration(max_iter)
        if switch is None or k < switch:
            return self.initial
        assert self.final is not None
        return self.final


PAPER_ALPHA_X: dict[str, StepSchedule] = {
    "latent": StepSchedule(0.01, 0.003),
    "attack_mnist": StepSchedule(0.6, 0.2),
    "attack_cifar": StepSchedule(0.1),
    "meta": StepSchedule(0.04, 0.01),
}
"""α_x schedules of the reference implementation, by kind of input."""


@dataclass(frozen=True)
class JIIOConfig:
    """Settings of :func:`jiio_solve`.

    Attributes:
        alpha_z, alpha_mu: damping of the z and μ blocks (0.8 and 0.6 in the paper).
        alpha_x: step size of the x block, a float or a :class:`StepSchedule`.
        solver: Anderson / Picard settings for the augmented map.
        refine: settings of the final forward and adjoint solves at the returned x
            (its tolerance is also the one the x residual is judged by: ``solver.tol``).
        restart_on_switch: clear the Anderson history when α_x switches.
        checkpoints: iterations at which to record the iterate (z, x), x projected (returned in
            ``InputOptResult.checkpoints``, for callers that pick among iterates, such as
            attacks whose last iterate is not always their strongest).
        snapshot_at: record (z, x) at this iteration (for the Jacobian regulariser at a
            trajectory point); None records nothing.
        x_weight: w > 0, the weight of the x block in Anderson's least squares (the
            solver iterates on w·x). 1 is the paper's unweighted state; on trained
            models larger weights reach a given objective in fewer iterations (see
            BENCHMARKS.md).
        x_scale: optional diagonal preconditioner d, one positive factor per entry of
            a sample's flattened x (see the module docstring); None is d = 1.
        refine_adjoint: re-solve μ at the returned x (``refine``). False keeps the
            loop's μ and measures its residual there with one VJP: for callers that
            use x and z* only. The loop's μ lags behind z and x (BENCHMARKS.md), so a
            solve stopped by its budget then rarely reports ``converged``; training's
            gradients need μ*.
    """

    alpha_z: float = 0.8
    alpha_mu: float = 0.6
    alpha_x: float | StepSchedule = 0.01
    solver: SolverConfig = field(default_factory=lambda: SolverConfig(memory=10, max_iter=100))
    refine: SolverConfig = field(default_factory=lambda: SolverConfig(memory=5, max_iter=30))
    restart_on_switch: bool = True
    snapshot_at: int | None = None
    checkpoints: tuple[int, ...] = ()
    x_weight: float = 1.0
    x_scale: tuple[float, ...] | None = None
    refine_adjoint: bool = True

    def __post_init__(self) -> None:
        if not (0 < self.alpha_z <= 1 and 0 < self.alpha_mu <= 1):
            raise ValueError("alpha_z and alpha_mu must lie in (0, 1]")
        if not self.x_weight > 0:
            raise ValueError(f"x_weight must be positive, got {self.x_weight}")
        if self.x_scale is not None and not all(d > 0 for d in self.x_scale):
            raise ValueError("x_scale must hold positive factors")

    @property
    def schedule(self) -> StepSchedule:
        a = self.alpha_x
        return a if isinstance(a, StepSchedule) else StepSchedule(float(a))


def _block_residual(delta: Tensor, new: Tensor, scale: float = 1.0) -> Tensor:
    """‖delta‖ / (‖new‖ + floor·√n) per sample for (B, n) blocks stored multiplied by
    ``scale`` (the ratio is that of the unscaled block: the floor scales with them)."""
    floor = scale * RESIDUAL_FLOOR * delta.shape[1] ** 0.5
    return delta.norm(dim=1) / (new.norm(dim=1) + floor)


def augmented_residuals(
    s: Tensor,
    gs: Tensor,
    sizes: tuple[int, int],
    a_z: float,
    a_mu: float,
    x_weight: float,
    d: Tensor | None = None,
) -> Tensor:
    """Block residuals (B, 3) of the augmented map at s = [z; w·x; μ] with F(s) = gs.

    The damping is undone, so the entries are those of the undamped steps:
    ‖f(z) − z‖ / ‖f(z)‖, ‖u_z − μ‖ / ‖u_z‖ and ‖x⁺ − x‖ / ‖x⁺‖ (each denominator with
    the floor of ``_block_residual``), where f(z) = z + d_z / α_z and u_z = μ + d_μ / α_μ
    for d = gs − s (pass it as ``d`` when it is at hand). ``sizes`` are the per-sample
    sizes of the z and x blocks (μ has z's).
    """
    nz, nx = sizes
    d = gs - s if d is None else d
    dz, dx, dmu = torch.split(d, [nz, nx, nz], dim=1)
    z, _, mu = torch.split(s, [nz, nx, nz], dim=1)
    x_new = gs[:, nz : nz + nx]
    floor = RESIDUAL_FLOOR * nz**0.5
    # ‖d_z / α_z‖ as ‖d_z‖ / α_z: one pass per block, for the denominator only.
    res_z = (dz.norm(dim=1) / a_z) / (torch.add(z, dz, alpha=1 / a_z).norm(dim=1) + floor)
    res_mu = (dmu.norm(dim=1) / a_mu) / (torch.add(mu, dmu, alpha=1 / a_mu).norm(dim=1) + floor)
    return torch.stack([res_z, res_mu, _block_residual(dx, x_new, x_weight)], dim=1)


def x_step_residual(
    problem: InputProblem,
    x: Tensor,
    grad_x: Tensor,
    alpha: float,
    step_scale: Tensor | None = None,
) -> Tensor:
    """Relative length of one projected x step, ‖x − Π(x − α P step(∇))‖ / ‖Π(...)‖, (B,).

    ``step_scale``: the diagonal P, broadcastable to x (None: P = I).
    """
    x_new = _projected_x_step(problem, x, grad_x, alpha, step_scale)
    b = x.shape[0]
    return _block_residual((x_new - x).reshape(b, -1), x_new.reshape(b, -1))


def jiio_solve(
    problem: InputProblem,
    config: JIIOConfig | None = None,
    *,
    mu0: Tensor | None = None,
) -> InputOptResult:
    """Solve an input-optimisation problem by JIIO.

    Args:
        problem: the batch of problems; ``z0`` and ``x0`` are the starting point.
        config: step sizes and solver settings (defaults: PAPER.md's α_z, α_μ).
        mu0: optional starting adjoint (zeros by default).

    Returns:
        An :class:`InputOptResult`; ``iterations`` counts augmented-map evaluations
        (each one f evaluation and one VJP), ``converged`` requires the z, μ and x
        residuals at the returned point all ≤ ``config.solver.tol``.
    """
    config = config or JIIOConfig()
    cfg = config.solver
    schedule = config.schedule
    switch = schedule.switch_iteration(cfg.max_iter)
    restart_at = cfg.restart_at
    if config.restart_on_switch and switch is not None:
        restart_at = (*restart_at, switch)
    # The loop aims at tol/10: the refined z and μ move the x-gradient by O(tol), and the
    # returned point is judged at tol.
    loop_cfg = dataclasses.replace(cfg, tol=0.1 * cfg.tol, restart_at=restart_at)

    cell, objective, constraint = problem.cell, problem.objective, problem.constraint
    z_init = problem.z0.detach()
    x_init = constraint.project(problem.x0.detach())
    mu_init = torch.zeros_like(z_init) if mu0 is None else mu0.detach()
    layout = StateLayout.of([z_init, x_init, mu_init])
    device, dtype = z_init.device, z_init.dtype
    trace = torch.zeros(cfg.max_iter, device=device, dtype=dtype)
    # α_x per iteration, looked up on the device by the iteration counter, so that the
    # map never reads k on the host (and can be replayed as a CUDA graph).
    alpha_x = torch.tensor(
        [schedule.value(i, cfg.max_iter) for i in range(cfg.max_iter)], device=device, dtype=dtype
    )
    # Iterates recorded for the caller (the snapshot and the checkpoints): one stacked
    # buffer with a spare last row, and a per-iteration table of the row to write, so
    # each iteration does one copy (into the spare row when k is not recorded).
    record_at = sorted({at for at in (*config.checkpoints, config.snapshot_at) if at is not None})
    rows = {at: i for i, at in enumerate(record_at)}
    spare = len(record_at)
    row_at: Tensor | None = None
    record_z: Tensor | None = None
    record_x: Tensor | None = None
    if record_at:
        row_at = torch.tensor([rows.get(i, spare) for i in range(cfg.max_iter)], device=device)
        record_z = z_init.new_zeros(spare + 1, *z_init.shape)
        record_x = x_init.new_zeros(spare + 1, *x_init.shape)
    a_z, a_mu = config.alpha_z, config.alpha_mu
    # The weight of x in Anderson's state: w, or w / d with a preconditioner d.
    x_weight: float | Tensor = config.x_weight
    step_scale: Tensor | None = None
    if config.x_scale is not None:
        d = _preconditioner(config.x_scale, x_init, constraint)
        x_weight, step_scale = config.x_weight / d, d * d
    # The paper's unweighted state: skip two elementwise passes over x per iteration.
    unweighted = config.x_scale is None and config.x_weight == 1.0

    s0 = layout.pack([z_init, x_weight * x_init, mu_init])
    # The map writes its value into this one buffer at every iteration (the solver copies
    # what it keeps), with no (B, N) temporaries for the damped blocks or the packing.
    out = torch.empty_like(s0)
    out_z, out_x, out_mu = layout.unpack(out)

    def augmented_map(s: Tensor, k: Tensor) -> Tensor:
        z, x_weighted, mu = layout.unpack(s)
        x = x_weighted if unweighted else x_weighted / x_weight
        fz, loss, gz, gx = lagrangian_grads(cell, objective, z, x, mu)
        trace.index_copy_(0, k.view(1), loss.mean().view(1))
        if row_at is not None and record_z is not None and record_x is not None:
            row = row_at.index_select(0, k.view(1))
            record_z.index_copy_(0, row, z.unsqueeze(0))
            record_x.index_copy_(0, row, x.unsqueeze(0))
        a_x = alpha_x.index_select(0, k.view(1))
        x_new = _projected_x_step(problem, x, gx, a_x, step_scale)
        # z + α_z (f − z) and μ + α_μ (u_z − μ), each one pass. lerp takes operands of
        # one dtype, so a cell that returns another one is cast to the state's.
        torch.lerp(z, fz.to(z.dtype), a_z, out=out_z)
        torch.lerp(mu, gz, a_mu, out=out_mu)
        if unweighted:
            out_x.copy_(x_new)
        else:
            torch.mul(x_new, x_weight, out=out_x)
        return out

    nz, nx, _ = layout.sizes

    def residuals(s: Tensor, gs: Tensor, d: Tensor) -> Tensor:
        return augmented_residuals(s, gs, (nz, nx), a_z, a_mu, config.x_weight, d)

    loop = fixed_point_solve(augmented_map, s0, loop_cfg, residuals)
    z_loop, x_loop_weighted, mu_loop = layout.unpack(loop.state)
    x_loop = x_loop_weighted / x_weight

    # Make the answer self-consistent at a feasible x (see module docstring).
    x_out = constraint.project(x_loop)
    end = solve_at(
        cell,
        objective,
        x_out,
        z_loop,
        mu_loop,
        config.refine,
        config.refine,
        solve_adjoint=config.refine_adjoint,
    )
    a_x_final = schedule.value(cfg.max_iter - 1, cfg.max_iter)
    res_x = x_step_residual(problem, x_out, end.grad_x, a_x_final, step_scale)

    res_z = end.forward.residual[:, 0]
    res_mu = end.adjoint.residual[:, 0]
    failed = loop.failed | end.forward.failed | end.adjoint.failed
    failed = failed | ~torch.isfinite(end.objective)
    tol = cfg.tol
    converged = (res_z <= tol) & (res_mu <= tol) & (res_x <= tol) & ~failed
    steps_run = loop.steps

    def iterate_at(at: int | None) -> tuple[Tensor, Tensor] | None:
        if record_z is None or record_x is None or at is None or at >= steps_run:
            return None
        return record_z[rows[at]], record_x[rows[at]]

    snapshot = iterate_at(config.snapshot_at)
    checkpoints: dict[int, tuple[Tensor, Tensor]] = {}
    for at in config.checkpoints:
        pair = iterate_at(at)
        if pair is not None:
            # Projected, as the returned x is: Anderson's mixing can leave the feasible set.
            checkpoints[at] = (pair[0], constraint.project(pair[1]))
    return InputOptResult(
        z=end.z,
        x=x_out,
        mu=end.mu,
        objective=end.objective,
        residual_z=res_z,
        residual_mu=res_mu,
        residual_x=res_x,
        converged=converged,
        failed=failed,
        iterations=loop.iterations,
        f_evals=loop.iterations + end.f_evals,
        vjps=loop.iterations + end.vjps,
        batch_f_evals=steps_run + end.batch_f_evals,
        trace=trace[:steps_run],
        method="jiio",
        snapshot=snapshot,
        checkpoints=checkpoints,
        graph=loop.graph,
        graph_failure=loop.graph_failure,
    )


def _projected_x_step(
    problem: InputProblem,
    x: Tensor,
    grad_x: Tensor,
    alpha: float | Tensor,
    step_scale: Tensor | None,
) -> Tensor:
    """Π(x − α P step(∇_x)): the x block's update, P the diagonal ``step_scale`` (or I)."""
    step = apply_step_rule(grad_x, problem.step_rule)
    if step_scale is not None:
        step = step * step_scale
    return problem.constraint.project(x - alpha * step)


def _preconditioner(factors: tuple[float, ...], x: Tensor, constraint: Constraint) -> Tensor:
    """``JIIOConfig.x_scale`` as a tensor of x's per-sample shape (1, *x_shape)."""
    per_sample = x[0].numel()
    if len(factors) != per_sample:
        raise ValueError(
            f"x_scale has {len(factors)} factors but a sample's x has {per_sample} entries"
        )
    if not isinstance(constraint, NoConstraint | Box | LinfBall):
        raise ValueError(
            f"x_scale needs a feasible set that acts coordinate by coordinate (none, a box "
            f"or an L∞ ball), not {type(constraint).__name__}"
        )
    return torch.tensor(factors, dtype=x.dtype, device=x.device).view(1, *x.shape[1:])
