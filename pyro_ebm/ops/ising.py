"""Exact log partition function of the zero-field 2-D Ising model on a periodic square lattice (Kaufman, 1949)."""

import math
import operator

import torch

#: Where :math:`|\log \sinh 2K|` exceeds this, :math:`\cosh \gamma_k > 10^8` and :math:`\gamma_k` is computed from
#: :math:`\log \cosh \gamma_k` (:math:`\cosh \gamma_k \approx \max(\sinh 2K, 1 / \sinh 2K)`, whose square
#: overflows for :math:`|K| > 177` or :math:`|K| < 10^{-154}`); below it from :math:`\cosh \gamma_k - 1`, which
#: stays accurate near :math:`\gamma_k = 0`.
_LOG_LARGE_COSH = math.log(1e8)

_EPS = torch.finfo(torch.float64).eps

#: Refuse a result whose estimated error, relative to ``max(1, |log Z|)``, exceeds this.
_MAX_RELATIVE_ERROR = 1e-9


def _side(value, name):
    try:
        side = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {value!r}") from None
    if side < 3:
        raise ValueError(
            f"{name} must be at least 3, got {side}: on a torus only 1 or 2 sites wide each site is bonded to itself "
            "(width 1) or has double bonds to one neighbour (width 2, where its right and left neighbours coincide); "
            "Kaufman's closed form counts those self- and double bonds, which a coupling matrix that couples each "
            "pair once does not"
        )
    return side


def _log_2cosh(x):
    x = x.abs()
    return x + torch.log1p(torch.exp(-2 * x))


def _log_2sinh(x):
    # x > 0; log(2 sinh x) = x + log(1 - e^{-2x}), with expm1 keeping it accurate for small x
    return x + torch.log(-torch.expm1(-2 * x))


def _log_abs_expm1(y):
    # log |e^y - 1| for y != 0 without overflow: |e^y - 1| = e^{max(y, 0)} (1 - e^{-|y|})
    return y.clamp(min=0) + torch.log(-torch.expm1(-y.abs()))


def _signed_logsumexp(logs, signs):
    """``(log |sum_i signs_i exp(logs_i)|, sign of the sum)`` for 1-d tensors."""
    top = logs.max()
    if not torch.isfinite(top):
        return top, torch.zeros_like(top)
    total = (signs * torch.exp(logs - top)).sum()
    return top + torch.log(total.abs()), torch.sign(total)


def ising_lattice_log_partition(rows, cols, coupling):
    r"""
    Exact log partition function of the zero-field Ising model on a ``rows`` x ``cols`` periodic square lattice.

    .. math::

        \log Z = \log \sum_{s \in \{-1, +1\}^{mn}} \exp\Big(K \sum_{\langle ij \rangle} s_i s_j\Big),

    with :math:`m` = ``rows``, :math:`n` = ``cols`` and the sum over the :math:`2mn` nearest-neighbour bonds of
    the torus (each site bonded to its right and its down neighbour, with wrap-around), by Kaufman's closed form
    (B. Kaufman, *Crystal statistics. II. Partition function evaluated by spinor analysis*, Phys. Rev. 76, 1232
    (1949)):

    .. math::

        Z = \tfrac12 (2 \sinh 2K)^{mn/2} (Z_1 + Z_2 + Z_3 + Z_4), \qquad
        Z_{1,2} = \prod_{r=0}^{n-1} 2 \{\cosh, \sinh\}(\tfrac{m}{2} \gamma_{2r+1}), \quad
        Z_{3,4} = \prod_{r=0}^{n-1} 2 \{\cosh, \sinh\}(\tfrac{m}{2} \gamma_{2r}),

    where :math:`\cosh \gamma_k = \cosh 2K \coth 2K - \cos(\pi k / n)` and :math:`\gamma_0 = 2K + \log \tanh K`
    (negative below the critical coupling :math:`K_c = \tfrac12 \log(1 + \sqrt 2)`, so :math:`Z_4 < 0` there).
    The value is symmetric in ``rows`` and ``cols`` (the transposed torus is the same graph).

    Every term is kept in log space as a signed logarithm: the factors of :math:`(2 \sinh 2K)^{mn/2}` are shared
    out among the :math:`n` factors of each product, the unpaired factors :math:`k = 0` and :math:`k = n` are
    written as the exact sums :math:`(e^{2K} - 1)^m \pm (1 + e^{-2K})^m` and
    :math:`(e^{2K} + 1)^m \pm (1 - e^{-2K})^m`, :math:`\log 2\cosh x` and :math:`\log 2\sinh x` are computed as
    :math:`|x| + \operatorname{log1p}(e^{-2|x|})` and :math:`x + \log(-\operatorname{expm1}(-2x))`,
    :math:`\gamma_k` from :math:`\cosh \gamma_k - 1` (accurate near :math:`\gamma_k = 0`) or, for large
    :math:`|K|`, from :math:`\log \cosh \gamma_k`, and the four terms are combined by a signed log-sum-exp
    (:math:`Z_2` and :math:`Z_4` may be negative). Nothing overflows however large the lattice or :math:`|K|`.

    :math:`K = 0` gives :math:`mn \log 2` exactly. For :math:`K < 0` (antiferromagnetic) on a lattice with
    ``rows`` and ``cols`` both even, flipping every other spin (a checkerboard) maps :math:`K` to :math:`-K`, so
    :math:`Z(K) = Z(|K|)`; otherwise (odd side, frustrated) the formula is evaluated at :math:`K < 0` directly,
    by its continuation: every paired factor :math:`(2\sinh 2K)^m\,(2\cosh m\gamma_k \pm 2)` and both unpaired
    factors are polynomials in :math:`e^{\pm 2K}`, so the closed form is an entire function of :math:`K` and equal
    to :math:`Z` for every real :math:`K`. There the four terms cancel more as :math:`K \to -\infty`: they exceed
    :math:`Z` by about :math:`e^{2|K| d}`, with :math:`d = m [n \text{ odd}] + n [m \text{ odd}]` the number of
    rings of bonds of odd length, each of which holds an unsatisfied bond in every state, and a result whose
    estimated error after that cancellation exceeds :math:`10^{-9} \max(1, |\log Z|)` is refused with a
    :class:`ValueError` (on a 3 x 3 torus from about :math:`K = -1.5`, on larger ones sooner).

    :param int rows: number of rows :math:`m` (at least 3).
    :param int cols: number of columns :math:`n` (at least 3).
    :param coupling: the coupling :math:`K` (a float or a 0-d tensor, any real value; differentiable when a
        tensor that requires grad, with :math:`d \log Z / dK = E[\sum_{\langle ij \rangle} s_i s_j]`).
    :returns: :math:`\log Z` as a 0-d float64 tensor.
    :raises ValueError: if ``rows`` or ``cols`` is below 3, ``coupling`` is not a finite scalar, or (frustrated
        lattice, strongly antiferromagnetic) the cancellation leaves an error above :math:`10^{-9}` relative.
    """
    m, n = _side(rows, "rows"), _side(cols, "cols")
    if not isinstance(coupling, torch.Tensor):
        coupling = torch.tensor(float(coupling), dtype=torch.float64)  # not as_tensor: a float32 default loses digits
    if coupling.dim() != 0 or coupling.is_complex():
        raise ValueError(f"coupling must be a real scalar, got a tensor of shape {tuple(coupling.shape)}")
    K = coupling.to(torch.float64)
    k_value = K.item()
    if not math.isfinite(k_value):
        raise ValueError(f"coupling must be finite, got {k_value}")
    if k_value == 0.0:
        return K * 0.0 + m * n * math.log(2.0)  # every state has weight 1; K * 0 keeps the (zero) gradient
    if k_value < 0 and m % 2 == 0 and n % 2 == 0:
        K, k_value = -K, -k_value  # checkerboard flip: Z(K) = Z(-K) on a bipartite torus
    sign = 1.0 if k_value > 0 else -1.0
    a = K.abs()
    device = K.device

    # log|2 sinh 2K|: each of the n factors of a product carries (2 sinh 2K)^{m/2} of the prefactor
    log_2sinh_2a = 2 * a + torch.log(-torch.expm1(-4 * a))
    index = torch.arange(2 * n, dtype=torch.float64, device=device)
    half_angle = math.pi * index / (2 * n)
    # cosh(gamma_k) = cosh 2K coth 2K - cos(pi k / n); for K < 0 the factors use gamma'_k with
    # cosh gamma'_k = -cosh gamma_k = (1 + a^2)/a + cos(pi k / n), a = |sinh 2K|.  1 -+ cos, exactly:
    one_minus_cos = 2 * (torch.sin(half_angle) if sign > 0 else torch.cos(half_angle)) ** 2
    log_s = log_2sinh_2a - math.log(2.0)
    if abs(log_s.item()) < _LOG_LARGE_COSH:
        s = torch.exp(log_s)
        u = (1 - s) / s * (1 - s) + one_minus_cos  # cosh(gamma) - 1 = (1 - s)^2 / s + (1 -+ cos)
        gamma = torch.log1p(u + torch.sqrt(u * (u + 2)))
    else:  # x = s + 1/s -+ cos = w (1 + (v -+ cos) v) with w = max(s, 1/s), v = min(s, 1/s) = 1/w
        v = torch.exp(-log_s.abs())
        log_x = log_s.abs() + torch.log1p((v - (1 - one_minus_cos)) * v)
        gamma = log_x + torch.log1p(torch.sqrt(-torch.expm1(-2 * log_x)))  # arccosh x = log(x + sqrt(x^2 - 1))
    half = 0.5 * m * gamma
    log_cosh_factor = 0.5 * m * log_2sinh_2a + _log_2cosh(half)
    log_sinh_factor = 0.5 * m * log_2sinh_2a + _log_2sinh(half)
    # (2 sinh 2K)^m (2 cosh m gamma +- 2) is (2|sinh 2K|)^m (2 cosh m gamma' +- (-1)^m 2) for K < 0
    swap = sign < 0 and m % 2 == 1

    one = torch.ones((), dtype=torch.float64, device=device)
    unpaired = {}
    for plus in (True, False):
        pm = 1.0 if plus else -1.0
        # k = 0: (2 sinh 2K)^{m/2} 2{cosh,sinh}(m gamma_0 / 2) = (e^{2K} - 1)^m +- (1 + e^{-2K})^m
        unpaired[0, plus] = _signed_logsumexp(
            torch.stack([m * _log_abs_expm1(2 * K), m * torch.logaddexp(0 * K, -2 * K)]),
            torch.stack([one * sign**m, one * pm]),
        )
        # k = n: (2 sinh 2K)^{m/2} 2{cosh,sinh}(m gamma_n / 2) = (e^{2K} + 1)^m +- (1 - e^{-2K})^m
        unpaired[n, plus] = _signed_logsumexp(
            torch.stack([m * torch.logaddexp(0 * K, 2 * K), m * _log_abs_expm1(-2 * K)]),
            torch.stack([one, one * pm * sign**m]),
        )

    logs, signs = [], []
    for parity, plus in ((1, True), (1, False), (0, True), (0, False)):  # Z1, Z2, Z3, Z4
        ks = range(parity, 2 * n, 2)
        paired = [k for k in ks if k not in (0, n)]
        table = log_cosh_factor if plus != swap else log_sinh_factor
        log_term = table[paired].sum() if paired else 0 * K
        term_sign = one
        for k in ks:
            if k in (0, n):
                log_factor, factor_sign = unpaired[k, plus]
                log_term = log_term + log_factor
                term_sign = term_sign * factor_sign
        logs.append(log_term)
        signs.append(term_sign)
    log_sum, sum_sign = _signed_logsumexp(torch.stack(logs), torch.stack(signs))
    log_z = log_sum - math.log(2.0)
    top = torch.stack(logs).max().item()
    # each term carries a relative error of a few eps * |log term|, which the cancellation in the signed sum
    # multiplies by max|Z_i| / |sum Z_i| (checked against enumeration on frustrated lattices)
    cancellation = top - log_sum.item()
    error = 4 * _EPS * (1 + abs(top)) * math.exp(min(cancellation, 700.0))
    if not (sum_sign.item() > 0 and math.isfinite(log_z.item())) or error > _MAX_RELATIVE_ERROR * max(
        1.0, abs(log_z.item())
    ):
        if sign < 0:
            raise ValueError(
                f"Kaufman's formula on the frustrated {m} x {n} torus (an odd side) at K = {k_value} loses "
                f"{cancellation / math.log(10.0):.1f} of float64's ~16 digits: its four terms nearly cancel for "
                "strongly antiferromagnetic K, leaving log Z with an estimated error of "
                f"{error:.1e}; use a smaller |K|, or a lattice with both sides even, where Z(K) = Z(-K)"
            )
        raise ValueError(f"Kaufman's formula failed numerically on the {m} x {n} torus at K = {k_value}")
    return log_z
