"""numpy's functions for explicit use: ``import llgrad.numpy as lnp``.

The same functions plain ``np.*`` calls reach on traced arrays, plus the composites
numpy lacks (relu, sigmoid, softmax, log_softmax, logsumexp), all with numerically
stable forms.  Outside a trace they compute with numpy.
"""
from llgrad.compiler.frontend.numpy_ops import (  # noqa: F401
    abs, absolute, add, arccos, arccosh, arcsin, arcsinh, arctan, arctan2, arctanh, amax,
    amin, argmax, argmin, astype, cosh, einsum, exp2, hypot, log2,
    log10, norm, sinh, tan, bitwise_and, bitwise_or, bitwise_xor, broadcast_to,
    clip, invert, logical_and, logical_not, logical_or, logical_xor, concatenate, cos, divide, dot,
    equal, exp, expand_dims, expm1, full_like, greater, greater_equal, less, less_equal, log,
    log1p, log_softmax, logistic, logsumexp, matmul, max, maximum, mean, min, minimum,
    multiply, negative, not_equal, ones_like, outer, positive, power, ravel, reciprocal, relu,
    reshape, sigmoid, sign, sin, softmax, sqrt, square, squeeze, stack, std, subtract, sum,
    swapaxes, take, tanh, tensordot, transpose, true_divide, var, where, zeros_like)
