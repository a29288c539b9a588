"""The Triton kernels of :mod:`spikeseg.kernels.triton_lif`, as plain functions.

Imported only when a Triton LIF runs (this module needs the ``triton`` package);
:func:`spikeseg.kernels.triton_lif._kernels` wraps them with ``triton.jit`` for CUDA tensors or
with Triton's interpreter for CPU tensors.
"""

import triton.language as tl

__all__ = ["lif_fwd", "lif_bwd"]


# --------------------------------------------------------------------------------------------
# Kernels (plain functions: triton_lif._kernels compiles or interprets them)
# --------------------------------------------------------------------------------------------


def lif_fwd(x_ptr, a_ptr, b_ptr, m0_ptr, s_ptr, u_ptr, m_ptr,
             N, C, HW, leak, theta,
             STEPS: tl.constexpr, AFFINE: tl.constexpr, CHANNELS_LAST: tl.constexpr,
             HAS_M0: tl.constexpr, HARD: tl.constexpr, SAVE_U: tl.constexpr,
             BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    if AFFINE:
        if CHANNELS_LAST:
            c = offs % C
        else:
            c = (offs // HW) % C
    if HAS_M0:
        m = tl.load(m0_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    else:
        m = tl.full([BLOCK], 0.0, tl.float32)
    for t in range(STEPS):
        y = tl.load(x_ptr + t * N + offs, mask=mask, other=0.0).to(tl.float32)
        if AFFINE:
            sa = tl.load(a_ptr + t * C + c, mask=mask, other=0.0)
            sb = tl.load(b_ptr + t * C + c, mask=mask, other=0.0)
            y = y * sa + sb
        u = m * leak + y
        s = (u > theta).to(tl.float32)
        tl.store(s_ptr + t * N + offs, s.to(s_ptr.dtype.element_ty), mask=mask)
        if SAVE_U:
            tl.store(u_ptr + t * N + offs, u, mask=mask)
        if HARD:
            m = u * (1.0 - s)
        else:
            m = u - theta * s
    tl.store(m_ptr + offs, m.to(m_ptr.dtype.element_ty), mask=mask)


def lif_bwd(u_ptr, gs_ptr, gm_ptr, gy_ptr, gm0_ptr,
             N, leak, theta, p, q,
             STEPS: tl.constexpr, SURROGATE: tl.constexpr, HAS_GS: tl.constexpr,
             HAS_GM: tl.constexpr, WANT_GM0: tl.constexpr, HARD: tl.constexpr,
             DETACH: tl.constexpr, TEMPORAL: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    if HAS_GM and TEMPORAL:
        carry = tl.load(gm_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    else:
        carry = tl.full([BLOCK], 0.0, tl.float32)
    for i in range(STEPS):
        t = STEPS - 1 - i
        u = tl.load(u_ptr + t * N + offs, mask=mask, other=0.0)
        d = u - theta
        if SURROGATE == 0:    # piecewise linear, eq. (6)
            sg = tl.maximum(1.0 - tl.abs(d) / theta, 0.0) * p
        elif SURROGATE == 1:  # fast sigmoid
            r = 1.0 + tl.abs(d) * p
            sg = 1.0 / (r * r)
        elif SURROGATE == 2:  # exponential
            sg = tl.exp(tl.abs(d) * (-q / theta)) * p
        else:                 # straight-through
            sg = tl.full([BLOCK], 1.0, tl.float32)
        if HAS_GS:
            gu = tl.load(gs_ptr + t * N + offs, mask=mask, other=0.0).to(tl.float32) * sg
        else:
            gu = tl.full([BLOCK], 0.0, tl.float32)
        if HARD:
            k = (u <= theta).to(tl.float32)
            if not DETACH:
                k = k - u * sg
            gu = gu + carry * k
        else:
            if DETACH:
                gu = gu + carry
            else:
                gu = gu + carry * (1.0 - theta * sg)
        tl.store(gy_ptr + t * N + offs, gu.to(gy_ptr.dtype.element_ty), mask=mask)
        if TEMPORAL:
            carry = gu * leak
        else:
            carry = tl.full([BLOCK], 0.0, tl.float32)
    if WANT_GM0:
        tl.store(gm0_ptr + offs, carry.to(gm0_ptr.dtype.element_ty), mask=mask)
