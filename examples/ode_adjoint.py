"""The gradient of an ODE solution: RK4 with ``llgrad.fori_loop``, differentiated in
reverse mode with respect to the initial state and the parameters.

    python examples/ode_adjoint.py [steps]

The Lotka-Volterra predator-prey system dx/dt = a x - b x y, dy/dt = d x y - c y is
integrated by classic Runge-Kutta (RK4) over ``steps`` steps; the loss is the squared
distance of the final state from a target.  ``fori_loop`` traces the RK4 step once,
so the program is one native loop whatever the step count, and reverse mode runs the
steps backwards through a reversed loop reading the states the forward loop stacked
(a discrete adjoint, exact for the discretised solution).  The script checks the
gradient against central finite differences of the loss and prints both.
"""
import sys

import numpy as np

import llgrad

T_END = 5.0
TARGET = np.array([1.2, 0.8])


def vector_field(state, theta):
    a, b, c, d = theta[0], theta[1], theta[2], theta[3]
    x, y = state[0], state[1]
    return np.stack([a * x - b * x * y, d * x * y - c * y])


def solve(state0, theta, steps):
    """The state at T_END by ``steps`` RK4 steps."""
    dt = T_END / steps

    def rk4_step(i, state):
        k1 = vector_field(state, theta)
        k2 = vector_field(state + 0.5 * dt * k1, theta)
        k3 = vector_field(state + 0.5 * dt * k2, theta)
        k4 = vector_field(state + dt * k3, theta)
        return state + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)

    return llgrad.fori_loop(0, steps, rk4_step, state0)


def loss(state0, theta, steps):
    return np.sum((solve(state0, theta, steps) - TARGET) ** 2)


def finite_differences(f, x, eps=1e-6):
    """Central differences of scalar ``f`` at every element of ``x``."""
    grad = np.zeros_like(x)
    for k in range(x.size):
        step = np.zeros_like(x)
        step.flat[k] = eps * max(1.0, abs(x.flat[k]))
        grad.flat[k] = (f(x + step) - f(x - step)) / (2 * step.flat[k])
    return grad


def main(steps=1000, show=True):
    state0 = np.array([1.0, 1.0])
    theta = np.array([1.1, 0.4, 0.4, 0.1])
    value = llgrad.jit(loss, static_argnums=2)
    grad = llgrad.grad(loss, argnums=(0, 1), static_argnums=2)
    d_state0, d_theta = grad(state0, theta, steps)
    fd_state0 = finite_differences(lambda s: value(s, theta, steps), state0)
    fd_theta = finite_differences(lambda t: value(state0, t, steps), theta)
    error = max(np.max(np.abs(d_state0 - fd_state0) / np.maximum(np.abs(fd_state0), 1e-3)),
                np.max(np.abs(d_theta - fd_theta) / np.maximum(np.abs(fd_theta), 1e-3)))
    if show:
        np.set_printoptions(precision=6)
        print(f"{steps} RK4 steps, loss {value(state0, theta, steps):.6f}, final state "
              f"{llgrad.jit(solve, static_argnums=2)(state0, theta, steps)}")
        print(f"d loss / d state0: {d_state0}   finite differences: {fd_state0}")
        print(f"d loss / d theta:  {d_theta}   finite differences: {fd_theta}")
        print(f"largest relative difference: {error:.2e}")
        t = grad.trace(state0, theta, steps)
        print(f"compiled gradient: {len(t.optimized.nodes)} nodes, "
              f"{t.optimized.count('loop')} loops (forward, reversed), for {steps} steps")
    return (d_state0, d_theta), (fd_state0, fd_theta), error


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
