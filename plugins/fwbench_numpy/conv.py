"""Convolution building blocks: im2col / col2im on stride tricks, and a naive loop oracle.

Internal layout. The NumPy backend keeps image activations as ``(C, H, W, N)`` ("CHWN", the
layout of cuda-convnet) instead of the canonical NCHW. With the batch as the last axis:

* the column matrix of a convolution is ``(C*k*k, Ho*Wo*N)`` and the output of the single GEMM
  ``W (F, C*k*k) @ cols`` is ``(F, Ho*Wo*N)`` = ``(F, Ho, Wo, N)``: already the layout of the
  next layer, no transpose copy;
* each im2col / col2im copy moves runs of ``Wo*N`` (stride 1) or ``N`` contiguous numbers, even
  for strided convolutions.

`fwbench_numpy.model.NumpyModel.to_internal` converts the canonical batch once, outside the timed
step (like a framework that prefers NHWC). Weights stay canonical (OIHW).

The naive functions at the end work in the canonical NCHW layout with explicit loops; they exist
only as the oracle that the tests compare the fast path against.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided


def conv_output_size(size: int, kernel: int, stride: int, pad: int) -> int:
    """Output length of a convolution or pooling window along one axis."""
    return (size + 2 * pad - kernel) // stride + 1


def window_view(xp: np.ndarray, kernel: int, stride: int, out_h: int, out_w: int) -> np.ndarray:
    """Read-only view ``(C, k, k, Ho, Wo, N)`` of every kernel window of ``xp (C, Hp, Wp, N)``.

    Element ``[c, i, j, ho, wo, n]`` is ``xp[c, i + stride*ho, j + stride*wo, n]``; nothing is copied.
    """
    sc, sh, sw, sn = xp.strides
    shape = (xp.shape[0], kernel, kernel, out_h, out_w, xp.shape[3])
    strides = (sc, sh, sw, sh * stride, sw * stride, sn)
    return as_strided(xp, shape, strides, writeable=False)


def pad_into(x: np.ndarray, pad: int, out: np.ndarray) -> np.ndarray:
    """Copy ``x (C, H, W, N)`` into the interior of ``out (C, H+2p, W+2p, N)``.

    The border of ``out`` is never written here: the caller allocates it zeroed once and reuses it.
    """
    h, w = x.shape[1], x.shape[2]
    np.copyto(out[:, pad:pad + h, pad:pad + w, :], x)
    return out


def im2col(x: np.ndarray, kernel: int, stride: int, pad: int, cols: np.ndarray,
           padded: np.ndarray | None = None) -> np.ndarray:
    """Unfold ``x (C, H, W, N)`` into ``cols (C*k*k, Ho*Wo*N)`` (filled in place and returned).

    Args:
        x: input in the internal layout.
        cols: preallocated ``(C, k, k, Ho, Wo, N)`` or ``(C*k*k, Ho*Wo*N)`` contiguous buffer.
        padded: preallocated zero-bordered ``(C, H+2p, W+2p, N)`` buffer, needed when ``pad > 0``.
    """
    c, h, w, n = x.shape
    ho, wo = conv_output_size(h, kernel, stride, pad), conv_output_size(w, kernel, stride, pad)
    if pad:
        if padded is None:
            raise ValueError("im2col with pad > 0 needs a zero-bordered `padded` buffer")
        x = pad_into(x, pad, padded)
    np.copyto(cols.reshape(c, kernel, kernel, ho, wo, n), window_view(x, kernel, stride, ho, wo))
    return cols.reshape(c * kernel * kernel, ho * wo * n)


def _valid_range(offset: int, stride: int, pad: int, size: int, out_size: int) -> tuple[int, int, int]:
    """For kernel offset ``offset``: the output positions ``[lo, hi)`` whose input index
    ``offset + stride*o - pad`` falls inside ``[0, size)``, and the first such input index."""
    lo = max(0, -(-(pad - offset) // stride))  # ceil((pad - offset) / stride)
    hi = min(out_size, (size - 1 + pad - offset) // stride + 1)
    return lo, hi, offset + stride * lo - pad


def col2im(cols: np.ndarray, x_shape: tuple[int, int, int, int], kernel: int, stride: int,
           pad: int, out: np.ndarray) -> np.ndarray:
    """Fold ``cols (C*k*k, Ho*Wo*N)`` back into ``out (C, H, W, N)``, summing overlaps.

    The adjoint of `im2col`. One strided slice addition per kernel offset (``k*k`` NumPy calls in
    all), cropped to the unpadded input, so no padded gradient buffer is needed. This is much
    faster than ``np.add.at`` on flat indices.
    """
    c, h, w, n = x_shape
    ho, wo = conv_output_size(h, kernel, stride, pad), conv_output_size(w, kernel, stride, pad)
    blocks = cols.reshape(c, kernel, kernel, ho, wo, n)
    pieces, covering = [], None
    for i in range(kernel):
        h0, h1, r0 = _valid_range(i, stride, pad, h, ho)
        for j in range(kernel):
            w0, w1, c0 = _valid_range(j, stride, pad, w, wo)
            if h1 <= h0 or w1 <= w0:
                continue
            dst = out[:, r0:r0 + stride * (h1 - h0 - 1) + 1:stride,
                      c0:c0 + stride * (w1 - w0 - 1) + 1:stride, :]
            src = blocks[:, i, j, h0:h1, w0:w1, :]
            if covering is None and dst.shape == out.shape:
                covering = (dst, src)  # this offset touches every input pixel: assign, don't add
            else:
                pieces.append((dst, src))
    if covering is None:
        out.fill(0)
    else:
        np.copyto(*covering)
    for dst, src in pieces:
        np.add(dst, src, out=dst)
    return out


# ------------------------------------------------------------------------------------------------
# The oracle: direct loops in the canonical NCHW layout (slow; tests only)
# ------------------------------------------------------------------------------------------------

def conv2d_naive(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, stride: int,
                 pad: int) -> np.ndarray:
    """Direct convolution (cross-correlation, as in every framework) by loops.

    Args:
        x: ``(N, C, H, W)``; weight: ``(F, C, k, k)``; bias: ``(F,)`` or None.

    Returns:
        ``(N, F, Ho, Wo)``.
    """
    n, c, h, w = x.shape
    f, _, k, _ = weight.shape
    ho, wo = conv_output_size(h, k, stride, pad), conv_output_size(w, k, stride, pad)
    xp = np.zeros((n, c, h + 2 * pad, w + 2 * pad), dtype=x.dtype)
    xp[:, :, pad:pad + h, pad:pad + w] = x
    y = np.zeros((n, f, ho, wo), dtype=x.dtype)
    for b in range(n):
        for o in range(f):
            for r in range(ho):
                for s in range(wo):
                    patch = xp[b, :, r * stride:r * stride + k, s * stride:s * stride + k]
                    y[b, o, r, s] = np.sum(patch * weight[o])
            if bias is not None:
                y[b, o] += bias[o]
    return y


def conv2d_naive_backward(x: np.ndarray, weight: np.ndarray, dy: np.ndarray, stride: int,
                          pad: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of `conv2d_naive` by the same loops: ``(dx (N,C,H,W), dw (F,C,k,k), db (F,))``."""
    n, c, h, w = x.shape
    f, _, k, _ = weight.shape
    ho, wo = dy.shape[2], dy.shape[3]
    xp = np.zeros((n, c, h + 2 * pad, w + 2 * pad), dtype=x.dtype)
    xp[:, :, pad:pad + h, pad:pad + w] = x
    dxp = np.zeros_like(xp)
    dw = np.zeros_like(weight)
    for b in range(n):
        for o in range(f):
            for r in range(ho):
                for s in range(wo):
                    g = dy[b, o, r, s]
                    rows = slice(r * stride, r * stride + k)
                    cols = slice(s * stride, s * stride + k)
                    dw[o] += g * xp[b, :, rows, cols]
                    dxp[b, :, rows, cols] += g * weight[o]
    db = dy.sum(axis=(0, 2, 3))
    return dxp[:, :, pad:pad + h, pad:pad + w].copy(), dw, db
