"""The jiio engine: DEQ fixed points, adjoints and input optimisation.

Knows nothing about images, files or the command line. The central abstraction is an
:class:`InputProblem`; :func:`jiio_solve` and :func:`naive_solve` both take one and
return an :class:`InputOptResult`.
"""

from jiio_cli.engine.anderson import (
    FixedPointResult,
    SolverConfig,
    all_finite,
    anderson_weights,
    fixed_point_solve,
    relative_residual,
)
from jiio_cli.engine.backtracking import Backtracking, jiio_solve_backtracking, replace_rows
from jiio_cli.engine.constraints import (
    Box,
    Constraint,
    L2Ball,
    LinfBall,
    NoConstraint,
    StepRule,
    apply_step_rule,
)
from jiio_cli.engine.continuation import (
    continuation_config,
    continue_unconverged,
    jiio_solve_continuing,
)
from jiio_cli.engine.fixed_point import (
    AdjointSolution,
    ForwardSolution,
    SolvedPoint,
    adjoint_solve,
    forward_solve,
    solve_at,
)
from jiio_cli.engine.grad import implicit_fixed_point, jacobian_penalty, optimal_value_surrogate
from jiio_cli.engine.jiio import (
    PAPER_ALPHA_X,
    JIIOConfig,
    StepSchedule,
    jiio_solve,
    x_step_residual,
)
from jiio_cli.engine.naive import NaiveConfig, inner_solves_converged, naive_solve
from jiio_cli.engine.problem import (
    InputOptResult,
    InputProblem,
    fixed_input_map,
    lagrangian_grads,
    objective_grad_z,
)
from jiio_cli.engine.state import MultiScaleCell, StateLayout

__all__ = [
    "PAPER_ALPHA_X",
    "AdjointSolution",
    "Backtracking",
    "Box",
    "Constraint",
    "FixedPointResult",
    "ForwardSolution",
    "InputOptResult",
    "InputProblem",
    "JIIOConfig",
    "L2Ball",
    "LinfBall",
    "MultiScaleCell",
    "NaiveConfig",
    "NoConstraint",
    "SolvedPoint",
    "SolverConfig",
    "StateLayout",
    "StepRule",
    "StepSchedule",
    "adjoint_solve",
    "all_finite",
    "anderson_weights",
    "apply_step_rule",
    "continuation_config",
    "continue_unconverged",
    "fixed_input_map",
    "fixed_point_solve",
    "forward_solve",
    "implicit_fixed_point",
    "inner_solves_converged",
    "jacobian_penalty",
    "jiio_solve",
    "jiio_solve_backtracking",
    "jiio_solve_continuing",
    "lagrangian_grads",
    "naive_solve",
    "objective_grad_z",
    "optimal_value_surrogate",
    "relative_residual",
    "replace_rows",
    "solve_at",
    "x_step_residual",
]
