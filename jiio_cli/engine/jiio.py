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

from jiio_cli.engine.anderson import (
    RESIDUAL_FLOOR,
    FixedPointResult,
    SolverConfig,
    fixed_point_solve,
)
from jiio_cli.engine.constraints import Box, Constraint, LinfBall, NoConstraint, apply_step_rule
from jiio_cli.engine.fixed_point import result_at, solve_at
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
    # Set-up: the starting point s0 = [z; w·x; μ] and the buffers the map writes into.
    z0, x0, m0 = _starting_point(problem, mu0)
    x_block = _XBlock.of(config, x0, problem.constraint)
    layout = StateLayout.of([z0, x0, m0])
    s0 = layout.pack([z0, x_block.to_state(x0), m0])
    max_iter = config.solver.max_iter
    alpha_x = _alpha_x_table(config.schedule, max_iter, like=z0)
    trace = z0.new_zeros(max_iter)
    recorder = _IterateRecorder((*config.checkpoints, config.snapshot_at), z0, x0, max_iter)
    # The map writes its value into this one buffer at every iteration (the solver copies
    # what it keeps), with no (B, N) temporaries for the damped blocks or the packing.
    out = torch.empty_like(s0)
    out_z, out_x, out_mu = layout.unpack(out)
    cell, objective, a_z, a_mu = problem.cell, problem.objective, config.alpha_z, config.alpha_mu

    def augmented_map(s: Tensor, k: Tensor) -> Tensor:
        """F(s) = [z + α_z (f − z); w·Π(x − α_x step(∇_x)); μ + α_μ (∇_z ℓ + J_zᵀ μ − μ)]."""
        z, x_state, mu = layout.unpack(s)
        x = x_block.from_state(x_state)
        fz, loss, gz, gx = lagrangian_grads(cell, objective, z, x, mu)
        trace.index_copy_(0, k.view(1), loss.mean().view(1))
        recorder.record(k, z, x)
        a_x = alpha_x.index_select(0, k.view(1))
        x_new = _projected_x_step(problem, x, gx, a_x, x_block.step_scale)
        # z + α_z (f − z) and μ + α_μ (u_z − μ), each one pass. lerp takes operands of
        # one dtype, so a cell that returns another one is cast to the state's.
        torch.lerp(z, fz.to(z.dtype), a_z, out=out_z)
        torch.lerp(mu, gz, a_mu, out=out_mu)
        x_block.write_state(x_new, out=out_x)
        return out

    nz, nx, _ = layout.sizes

    def residuals(s: Tensor, gs: Tensor, d: Tensor) -> Tensor:
        return augmented_residuals(s, gs, (nz, nx), a_z, a_mu, config.x_weight, d)

    # The loop.
    loop = fixed_point_solve(augmented_map, s0, _loop_config(config), residuals)
    # The refinement, at the returned (projected) x.
    z_loop, x_loop_state, mu_loop = layout.unpack(loop.state)
    x_loop = x_loop_state / x_block.weight
    return _refined_result(
        problem, config, (z_loop, x_loop, mu_loop), loop, x_block, recorder, trace
    )


def _starting_point(problem: InputProblem, mu0: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """(z0, Π(x0), μ0) detached, with μ0 = 0 unless given."""
    z = problem.z0.detach()
    mu = torch.zeros_like(z) if mu0 is None else mu0.detach()
    return z, problem.constraint.project(problem.x0.detach()), mu


def _loop_config(config: JIIOConfig) -> SolverConfig:
    """The solver settings of the loop: the history cleared where α_x switches (the map
    changes there), and a tolerance of tol/10, because the refined z and μ move the
    x-gradient by O(tol) and the returned point is judged at tol."""
    cfg = config.solver
    switch = config.schedule.switch_iteration(cfg.max_iter)
    restart_at = cfg.restart_at
    if config.restart_on_switch and switch is not None:
        restart_at = (*restart_at, switch)
    return dataclasses.replace(cfg, tol=0.1 * cfg.tol, restart_at=restart_at)


def _alpha_x_table(schedule: StepSchedule, max_iter: int, like: Tensor) -> Tensor:
    """α_x per iteration (max_iter,), looked up on the device by the iteration counter,
    so that the map never reads k on the host (and can be replayed as a CUDA graph)."""
    values = [schedule.value(i, max_iter) for i in range(max_iter)]
    return torch.tensor(values, device=like.device, dtype=like.dtype)


@dataclass(frozen=True)
class _XBlock:
    """How x sits in the solver's state: as w·x, or as (w/d)·x with a preconditioner d,
    whose x step is then scaled by ``step_scale`` = d² (see the module docstring)."""

    weight: float | Tensor
    step_scale: Tensor | None

    @classmethod
    def of(cls, config: JIIOConfig, x: Tensor, constraint: Constraint) -> _XBlock:
        if config.x_scale is None:
            return cls(config.x_weight, None)
        d = _preconditioner(config.x_scale, x, constraint)
        return cls(config.x_weight / d, d * d)

    @property
    def unweighted(self) -> bool:
        """The paper's state [z; x; μ]: the map skips two elementwise passes over x."""
        return self.step_scale is None and self.weight == 1.0

    def to_state(self, x: Tensor) -> Tensor:
        return self.weight * x

    def from_state(self, x_state: Tensor) -> Tensor:
        return x_state if self.unweighted else x_state / self.weight

    def write_state(self, x: Tensor, out: Tensor) -> None:
        if self.unweighted:
            out.copy_(x)
        else:
            torch.mul(x, self.weight, out=out)


class _IterateRecorder:
    """Iterates (z, x) recorded at chosen iterations (the snapshot and the checkpoints).

    One stacked buffer with a spare last row, and a per-iteration table of the row to
    write, so each iteration does one copy (into the spare row when k is not recorded)
    and never reads k on the host. Nothing is allocated when nothing is recorded.
    """

    def __init__(self, at: tuple[int | None, ...], z0: Tensor, x0: Tensor, max_iter: int):
        record_at = sorted({k for k in at if k is not None})
        self.rows = {k: i for i, k in enumerate(record_at)}
        spare = len(record_at)
        self.row_at: Tensor | None = None
        if record_at:
            rows = [self.rows.get(i, spare) for i in range(max_iter)]
            self.row_at = torch.tensor(rows, device=z0.device)
            self.z = z0.new_zeros(spare + 1, *z0.shape)
            self.x = x0.new_zeros(spare + 1, *x0.shape)

    def record(self, k: Tensor, z: Tensor, x: Tensor) -> None:
        if self.row_at is not None:
            row = self.row_at.index_select(0, k.view(1))
            self.z.index_copy_(0, row, z.unsqueeze(0))
            self.x.index_copy_(0, row, x.unsqueeze(0))

    def iterate_at(self, at: int | None, steps_run: int) -> tuple[Tensor, Tensor] | None:
        """(z, x) of iteration ``at`` if it was recorded and reached, else None."""
        if at is None or at not in self.rows or at >= steps_run:
            return None
        return self.z[self.rows[at]], self.x[self.rows[at]]


def _refined_result(
    problem: InputProblem,
    config: JIIOConfig,
    loop_point: tuple[Tensor, Tensor, Tensor],
    loop: FixedPointResult,
    x_block: _XBlock,
    recorder: _IterateRecorder,
    trace: Tensor,
) -> InputOptResult:
    """Make the answer self-consistent at a feasible x (see the module docstring): x
    projected, z re-solved and μ refined there (warm-started from the loop's ``loop_point``
    (z, x, μ)), the three block residuals measured at that point."""
    z_loop, x_loop, mu_loop = loop_point
    constraint = problem.constraint
    x_out = constraint.project(x_loop)
    end = solve_at(
        problem.cell,
        problem.objective,
        x_out,
        z_loop,
        mu_loop,
        config.refine,
        config.refine,
        solve_adjoint=config.refine_adjoint,
    )
    max_iter = config.solver.max_iter
    a_x_final = config.schedule.value(max_iter - 1, max_iter)
    res_x = x_step_residual(problem, x_out, end.grad_x, a_x_final, x_block.step_scale)
    checkpoints: dict[int, tuple[Tensor, Tensor]] = {}
    for at in config.checkpoints:
        pair = recorder.iterate_at(at, loop.steps)
        if pair is not None:
            # Projected, as the returned x is: Anderson's mixing can leave the feasible set.
            checkpoints[at] = (pair[0], constraint.project(pair[1]))
    tol = config.solver.tol
    return result_at(
        end,
        x_out,
        res_x,
        tol=tol,
        x_tol=tol,
        loop_failed=loop.failed,
        iterations=loop.iterations,
        f_evals=loop.iterations + end.f_evals,
        vjps=loop.iterations + end.vjps,
        batch_f_evals=loop.steps + end.batch_f_evals,
        trace=trace[: loop.steps],
        method="jiio",
        snapshot=recorder.iterate_at(config.snapshot_at, loop.steps),
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
