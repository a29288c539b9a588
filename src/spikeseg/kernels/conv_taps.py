"""The weight gradient of a convolution whose taps mostly fall into its zero padding, computed
over the valid taps only.

A 3×3 convolution with dilation ``d`` and padding ``d`` reads, for an output pixel ``(h, w)``,
the inputs ``(h + (i−1)d, w + (j−1)d)``, ``i, j ∈ {0, 1, 2}``. When ``d`` is large against the
feature map — Spiking-DeepLab's classifier, ``d = 12`` on a 16×16 map for 64×64 images — most
of those reads are padding: there only 25% of the 9 taps' products involve an input pixel
(``valid_fraction``). oneDNN skips much of the padding in its forward and input-gradient
kernels but not in its weight-gradient kernel, which then costs 3-4× the forward pass.

Here the weight gradient is computed tap by tap as the matrix product of the output gradient
and the input over the rectangle where that tap is valid:

.. math::

    \\frac{\\partial L}{\\partial W_{:,:,i,j}} = \\sum_{n,h,w \\in R_{ij}}
        g_{n,:,h,w}^{\\top}\\, x_{n,:,\\,h+(i-1)d,\\,w+(j-1)d}

(one GEMM per tap, ``R_ij`` the valid rectangle), which is the same sum in another order:
gradients agree with oneDNN's to rounding (≈1e-7 relative). The forward pass and the input
gradient are oneDNN's (``F.conv2d``, ``aten.convolution_backward``), so spikes are unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["valid_fraction", "use_valid_taps", "valid_tap_conv2d"]

_aten = torch.ops.aten

THRESHOLD = 0.5
"""Convolutions whose valid fraction is at most this use the tap-by-tap weight gradient."""


def _taps(conv: nn.Conv2d, H: int, W: int) -> list[tuple[int, int, int, int, int, int, int, int]]:
    """``(i, j, dh, dw, h0, h1, w0, w1)`` of every tap with a non-empty valid output
    rectangle ``[h0, h1) × [w0, w1)`` (stride 1, output size = input size)."""
    kh, kw = conv.kernel_size
    (dh_, dw_), (ph, pw) = conv.dilation, conv.padding
    out = []
    for i in range(kh):
        for j in range(kw):
            dh, dw = i * dh_ - ph, j * dw_ - pw
            h0, h1 = max(0, -dh), min(H, H - dh)
            w0, w1 = max(0, -dw), min(W, W - dw)
            if h0 < h1 and w0 < w1:
                out.append((i, j, dh, dw, h0, h1, w0, w1))
    return out


def valid_fraction(conv: nn.Conv2d, H: int, W: int) -> float:
    """Share of a stride-1 'same' convolution's multiply-adds that involve an input pixel."""
    kh, kw = conv.kernel_size
    valid = sum((h1 - h0) * (w1 - w0) for *_, h0, h1, w0, w1 in _taps(conv, H, W))
    return valid / (kh * kw * H * W)


def use_valid_taps(conv: nn.Module, x: Tensor) -> bool:
    """True when ``conv`` on ``x`` qualifies: a plain stride-1 ``nn.Conv2d`` whose output has
    the input's size, one group, zero padding, channels-last input, and a valid fraction of at
    most :data:`THRESHOLD`."""
    if type(conv) is not nn.Conv2d or conv.groups != 1 or conv.stride != (1, 1) \
            or conv.padding_mode != "zeros" or isinstance(conv.padding, str) or x.dim() != 4:
        return False
    kh, kw = conv.kernel_size
    (dh, dw), (ph, pw) = conv.dilation, conv.padding
    if (kh - 1) * dh != 2 * ph or (kw - 1) * dw != 2 * pw:
        return False
    if not x.is_contiguous(memory_format=torch.channels_last):
        return False
    return valid_fraction(conv, x.shape[-2], x.shape[-1]) <= THRESHOLD


class _ValidTapConvFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, conv):
        y = F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
        ctx.save_for_backward(x, weight)
        ctx.conv = conv
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx, grad_y):
        x, weight = ctx.saved_tensors
        conv: nn.Conv2d = ctx.conv
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = _aten.convolution_backward(
                grad_y, x, weight, None, list(conv.stride), list(conv.padding),
                list(conv.dilation), False, [0, 0], 1, [True, False, False])[0]
        if ctx.needs_input_grad[1]:
            gw = _weight_grad(grad_y, x, weight, conv)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = grad_y.sum((0, 2, 3))
        return gx, gw, gb, None


def _weight_grad(grad_y: Tensor, x: Tensor, weight: Tensor, conv: nn.Conv2d) -> Tensor:
    """``∂L/∂W`` as one GEMM per tap over its valid rectangle (see the module docstring)."""
    N, cin, H, W = x.shape
    cout = weight.shape[0]
    xn = x.permute(0, 2, 3, 1)  # [N, H, W, Cin], contiguous for channels-last x
    gn = grad_y.permute(0, 2, 3, 1)
    if not gn.is_contiguous():
        gn = gn.contiguous()
    kh, kw = conv.kernel_size
    buf = weight.new_zeros(cout, kh, kw, cin)  # channels-last weight layout
    for i, j, dh, dw, h0, h1, w0, w1 in _taps(conv, H, W):
        g = gn[:, h0:h1, w0:w1].reshape(-1, cout)
        xs = xn[:, h0 + dh:h1 + dh, w0 + dw:w1 + dw].reshape(-1, cin)
        torch.mm(g.t(), xs, out=buf[:, i, j, :])
    return buf.permute(0, 3, 1, 2)


def valid_tap_conv2d(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """``conv(x)``, with the valid-tap weight gradient in backward (see :func:`use_valid_taps`
    for when it applies; callers check it)."""
    if not torch.is_grad_enabled() or torch.is_autocast_enabled(x.device.type):
        return conv(x)
    return _ValidTapConvFn.apply(x, conv.weight, conv.bias, conv)
