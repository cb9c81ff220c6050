/* Template body (see fl_instantiate.h): elementwise regression losses of the
 * residual r = x - t, and bounding-box IoU losses.
 *
 * Elementwise (PyTorch's formulas; gradient with respect to x, the target's is
 * its negative):
 *   MSE        l = r^2                                   dl/dx = 2 r
 *   L1         l = |r|                                   dl/dx = sign(r), sign(0) = 0
 *   smooth L1  l = r^2 / (2 beta) if |r| < beta,         dl/dx = r / beta or sign(r)
 *                  |r| - beta / 2 otherwise              (beta = 0 is L1)
 *   Huber      l = r^2 / 2 if |r| <= delta,              dl/dx = clamp(r, -delta, delta)
 *                  delta (|r| - delta / 2) otherwise
 *   log-cosh   l = log(cosh(r))                          dl/dx = tanh(r)
 * The gradient `g` may alias x or t: each vector is read before it is written. */

/* expm1(z) for z <= 1 (NaN in, NaN out): z = n ln2 + r with |r| <= ln2/2 and
 * expm1(z) = 2^n expm1(r) + (2^n - 1). For |z| < ln2/2, n = 0 and the result is
 * the polynomial for expm1(r) itself, so tiny z keeps its relative accuracy;
 * below log(smallest normal) the result is -1 (correctly rounded). */
FL_INL V N_(vexpm1_le1)(V z) {
#if FL_DOUBLE
    static const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
    static const double shifter = 6755399441055744.0; /* 1.5 * 2^52 */
#else
    static const float ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;
    static const float shifter = 12582912.0f;         /* 1.5 * 2^23 */
#endif
    static const double inv_fact[14] = {1.0, 1.0, 1.0 / 2, 1.0 / 6, 1.0 / 24, 1.0 / 120,
        1.0 / 720, 1.0 / 5040, 1.0 / 40320, 1.0 / 362880, 1.0 / 3628800, 1.0 / 39916800,
        1.0 / 479001600, 1.0 / 6227020800.0};
    V zs = N_(vsel)(z < (T)X_EXP_MIN, N_(vset1)((T)X_EXP_MIN), z);
    V k = zs * (T)1.44269504088896340736 + shifter;
    V n = k - shifter;
    V r = zs - n * ln2_hi - n * ln2_lo;
    /* expm1(r) = r + r^2 p(r), p = sum_{d=2..EXP_DEG} r^(d-2) / d!: the truncation
     * error r^EXP_DEG / (EXP_DEG+1)! relative to r is below half an ulp. */
    V p = N_(vset1)((T)inv_fact[EXP_DEG]);
    for (int d = EXP_DEG - 1; d >= 2; d--) p = p * r + (T)inv_fact[d];
    V em = r + r * r * p;
    VI ni = (VI)k - (VI)N_(vset1)(shifter);        /* n in [-1022, 1] (f64), [-126, 1] (f32) */
    V two_n = (V)((VI)N_(vset1)((T)1.0) + (ni << MANT_BITS));
    /* below X_EXP_MIN this is -1 + 2^-126 (f32) or -1 + 2^-1022 (f64), which rounds to
     * -1; a NaN z goes through every step as NaN */
    return two_n * em + (two_n - (T)1.0);
}

/* |x|, and x with the sign of s (s's sign bit xor-ed in; m >= 0 in every use): bit
 * operations, one instruction each. */
FL_INL V N_(vabs)(V x) { return (V)((VI)x & ~(VI)N_(vset1)(-(T)0)); }
FL_INL V N_(vxorsign)(V x, V s) { return (V)((VI)x ^ ((VI)s & (VI)N_(vset1)(-(T)0))); }

/* sign(r) * m for r != 0, 0 for r == 0, NaN for NaN (r * 0 keeps the NaN). */
FL_INL V N_(vsignmul)(V r, V m) {
    return N_(vsel)(r > (T)0, m, N_(vsel)(r < (T)0, -m, r * (T)0));
}

/* log(cosh(r)) and tanh(r) without overflow or cancellation. With a = |r|,
 * m = expm1(-a) (accurate for tiny a) and E = 1 + m = exp(-a):
 *   tanh(a/2) = -m / (2 + m),  tanh(a) = (1 - E^2) / (1 + E^2) = -m (2 + m) / (1 + E^2),
 *   a < 0.7:  log cosh(a) = 2 atanh(s), s = tanh(a/2)^2 (full relative accuracy for
 *             tiny a, where a + log1p(exp(-2a)) - log 2 would cancel);
 *   a >= 0.7: log cosh(a) = a - log 2 + log1p(E^2), log1p(u) = 2 atanh(u / (2 + u)).
 * The split balances the two arguments of atanh: s <= tanh(0.35)^2 = 0.1132 and
 * u / (2 + u) <= 0.1098, where the odd series s (1 + s^2/3 + s^4/5 + ...) converges
 * fast. The three denominators share one division. E enters only where its absolute
 * (not relative) error matters, so forming it as 1 + m is harmless. */
#if FL_DOUBLE
#define FL_ATANH_TERMS 9    /* 0.1132^18 / 19 < 2^-60 */
#else
#define FL_ATANH_TERMS 4    /* 0.1132^8 / 9 < 2^-28 */
#endif
FL_INL void N_(vlogcosh)(V r, V *l, V *d) {
    V a = N_(vabs)(r);
    V m = N_(vexpm1_le1)(-a);                  /* in [-1, 0] */
    V E = m + (T)1;
    V E2 = E * E;                              /* exp(-2a) */
    V D1 = m + (T)2, D3 = E2 + (T)1, D2 = D3 + (T)1;
    V D12 = D1 * D2;
    V inv = (T)1 / (D12 * D3);
    V mi = -m * inv;
    V half = mi * (D2 * D3);                   /* tanh(a/2) */
    V th = mi * (D1 * D12);                    /* tanh(a) */
    VI small = a < (T)0.7;
    V s = N_(vsel)(small, half * half, E2 * (D1 * D3) * inv);
    V s2 = s * s;
    V q = N_(vset1)((T)(1.0 / (2 * FL_ATANH_TERMS - 1)));
    for (int k = FL_ATANH_TERMS - 2; k >= 1; k--) q = q * s2 + (T)(1.0 / (2 * k + 1));
    V two_s = s + s;
    V lc = two_s + two_s * s2 * q;             /* 2 atanh(s) */
    *l = N_(vsel)(small, lc, (a - (T)0.69314718055994530942) + lc);
    *d = N_(vxorsign)(th, r);
}
#undef FL_ATANH_TERMS

/* Loss l and derivative d = dl/dr of one vector of residuals; p is beta (smooth
 * L1, with ip = 1 / beta, 0 when beta = 0) or delta (Huber). `kind` is a
 * compile-time constant at every call, so the switch folds away. */
FL_INL void N_(reg_point)(const int kind, V r, T p, T ip, V *l, V *d) {
    switch (kind) {
    case FL_REG_MSE:
        *l = r * r;
        *d = r + r;
        break;
    case FL_REG_L1:
        *l = N_(vabs)(r);
        *d = N_(vsignmul)(r, N_(vset1)((T)1));
        break;
    case FL_REG_SMOOTH_L1: {
        V a = N_(vabs)(r);
        VI in = a < p;                         /* never true for beta = 0 or NaN */
        *l = N_(vsel)(in, (T)0.5 * r * r * ip, a - (T)0.5 * p);
        *d = N_(vsel)(in, r * ip, N_(vsignmul)(r, N_(vset1)((T)1)));
        break;
    }
    case FL_REG_HUBER: {
        V a = N_(vabs)(r);
        VI in = a <= p;
        *l = N_(vsel)(in, (T)0.5 * r * r, p * (a - (T)0.5 * p));
        /* clamp(r, -delta, delta); a NaN r falls through both tests and stays NaN */
        *d = N_(vsel)(r > p, N_(vset1)(p), N_(vsel)(r < -p, N_(vset1)(-p), r));
        break;
    }
    default: /* FL_REG_LOGCOSH */
        N_(vlogcosh)(r, l, d);
        break;
    }
}

/* One block of n elements: returns sum(w * l) (float64 over FL_REG_SUM_BLOCK
 * pieces); lout (w * l per element) and g (w * dl/dx * gscale) are optional,
 * w is NULL (all ones) or n weights aligned with x. */
FL_INL double N_(reg_impl)(const int kind, const T *x, const T *t, const T *w, T *lout, T *g,
                           int64_t n, T p, T gscale) {
    const T ip = p > (T)0 ? (T)1 / p : (T)0;
    double total = 0.0;
    for (int64_t b = 0; b < n; b += FL_REG_SUM_BLOCK) {
        int64_t end = b + FL_REG_SUM_BLOCK < n ? b + FL_REG_SUM_BLOCK : n;
        V acc = N_(vset1)(0);
        for (int64_t k = b; k < end; k += W) {
            int64_t nk = end - k;
            V r = N_(vload_n)(x + k, nk, 0) - N_(vload_n)(t + k, nk, 0);
            V l, d;
            N_(reg_point)(kind, r, p, ip, &l, &d);
            if (w) {
                V wk = N_(vload_n)(w + k, nk, 0);
                l *= wk;
                d *= wk;
            }
            /* padded lanes have r = 0, so l = 0 already; the select also keeps a
             * weight's padding from mattering */
            acc += nk < W ? N_(vsel)(N_(vfirst)(nk), l, N_(vset1)(0)) : l;
            if (lout) N_(vstore_n)(lout + k, l, nk);
            if (g) N_(vstore_n)(g + k, d * gscale, nk);
        }
        total += N_(vhsum)(acc);
    }
    return total;
}

/* The five losses as separate, fully specialised loops. */
static double N_(reg_block)(int kind, const T *x, const T *t, const T *w, T *lout, T *g,
                            int64_t n, T p, T gscale) {
    switch (kind) {
    case FL_REG_MSE: return N_(reg_impl)(FL_REG_MSE, x, t, w, lout, g, n, p, gscale);
    case FL_REG_L1: return N_(reg_impl)(FL_REG_L1, x, t, w, lout, g, n, p, gscale);
    case FL_REG_SMOOTH_L1: return N_(reg_impl)(FL_REG_SMOOTH_L1, x, t, w, lout, g, n, p, gscale);
    case FL_REG_HUBER: return N_(reg_impl)(FL_REG_HUBER, x, t, w, lout, g, n, p, gscale);
    default: return N_(reg_impl)(FL_REG_LOGCOSH, x, t, w, lout, g, n, p, gscale);
    }
}

/* --- bounding boxes: (x1, y1, x2, y2) per box, 4 contiguous values ------------------ */

/* Share of a in d max(a, b) and d min(a, b): 1, 0 or, on a tie, 1/2 (PyTorch's
 * maximum/minimum split the gradient evenly between equal arguments). */
FL_INL T N_(share_max)(T a, T b) { return a > b ? (T)1 : a == b ? (T)0.5 : (T)0; }
FL_INL T N_(share_min)(T a, T b) { return a < b ? (T)1 : a == b ? (T)0.5 : (T)0; }

/* torchvision's loss of one box pair p, q and, with grad, its gradient times gs
 * into gp, gq:
 *   I = intersection area (0 unless the overlap has positive width and height),
 *   U = area(p) + area(q) - I, iou = I / (U + eps); enclosing box (cw, ch);
 *   GIoU: 1 - iou + (cw ch - U) / (cw ch + eps)
 *   DIoU: 1 - iou + |center(p) - center(q)|^2 / (cw^2 + ch^2 + eps)
 *   CIoU: DIoU + alpha v, v = 4/pi^2 (atan(wq/hq) - atan(wp/hp))^2,
 *         alpha = v / (1 - iou + v + eps) held constant in the gradient (torchvision
 *         computes it under no_grad). atan(w/h) is taken as atan2(w, h), equal for
 *         h > 0 and finite for zero-height boxes; its gradient is 0 at w = h = 0. */
FL_INL T N_(box_pair)(const int kind, const int grad, const T *p, const T *q, T *gp, T *gq,
                      T eps, T gs) {
    const T x1 = p[0], y1 = p[1], x2 = p[2], y2 = p[3];
    const T X1 = q[0], Y1 = q[1], X2 = q[2], Y2 = q[3];
    const T w1 = x2 - x1, h1 = y2 - y1, w2 = X2 - X1, h2 = Y2 - Y1;
    const T ix1 = x1 > X1 ? x1 : X1, iy1 = y1 > Y1 ? y1 : Y1;
    const T ix2 = x2 < X2 ? x2 : X2, iy2 = y2 < Y2 ? y2 : Y2;
    const T iw = ix2 - ix1, ih = iy2 - iy1;
    const int ov = (iw > (T)0) & (ih > (T)0);
    const T I = ov ? iw * ih : (T)0;
    const T U = w1 * h1 + w2 * h2 - I;
    const T Ue = U + eps, iou = I / Ue;
    const T cx1 = x1 < X1 ? x1 : X1, cy1 = y1 < Y1 ? y1 : Y1;
    const T cx2 = x2 > X2 ? x2 : X2, cy2 = y2 > Y2 ? y2 : Y2;
    const T cw = cx2 - cx1, ch = cy2 - cy1;
    T loss, gU, gcw, gch, gdx = 0, gdy = 0, gw1 = 0, gh1 = 0, gw2 = 0, gh2 = 0;
    if (kind == FL_BOX_GIOU) {
        const T C = cw * ch, Ce = C + eps;
        loss = (T)1 - iou + (C - U) / Ce;
        gU = gs * (iou / Ue - (T)1 / Ce);        /* d/dU of -I/(U+eps) - U/(C+eps) */
        const T gC = (gs / Ce) * (Ue / Ce);      /* d/dC of (C - U)/(C + eps) */
        gcw = gC * ch;
        gch = gC * cw;
    } else {
        const T dx = (x2 + x1) / (T)2 - (X1 + X2) / (T)2, dy = (y2 + y1) / (T)2 - (Y1 + Y2) / (T)2;
        const T c2 = dx * dx + dy * dy, d2 = cw * cw + ch * ch + eps;
        loss = (T)1 - iou + c2 / d2;
        gU = gs * iou / Ue;
        const T gd2 = -gs * (c2 / d2) / d2;
        gcw = gd2 * (T)2 * cw;
        gch = gd2 * (T)2 * ch;
        gdx = gs * dx / d2;                      /* d/dx1 of c2/d2 (dx/dx1 = 1/2) */
        gdy = gs * dy / d2;
        if (kind == FL_BOX_CIOU) {
            const double k4 = 0.40528473456935108578;   /* 4 / pi^2 */
            const double da = atan2((double)w2, (double)h2) - atan2((double)w1, (double)h1);
            const T v = (T)(k4 * da * da);
            const T alpha = v / ((T)1 - iou + v + eps);
            loss += alpha * v;
            if (grad) {
                const T gda = (T)(2.0 * k4 * da) * alpha * gs;   /* d(alpha v)/d(atan q) */
                const T r1 = w1 * w1 + h1 * h1, r2 = w2 * w2 + h2 * h2;
                gw1 = r1 > (T)0 ? -gda * h1 / r1 : (T)0;
                gh1 = r1 > (T)0 ? gda * w1 / r1 : (T)0;
                gw2 = r2 > (T)0 ? gda * h2 / r2 : (T)0;
                gh2 = r2 > (T)0 ? -gda * w2 / r2 : (T)0;
            }
        }
    }
    if (!grad) return loss;
    const T gI = -gs / Ue - gU;                 /* iou's own term, and U = ... - I */
    gw1 += gU * h1;
    gh1 += gU * w1;
    gw2 += gU * h2;
    gh2 += gU * w2;
    const T giw = ov ? gI * ih : (T)0, gih = ov ? gI * iw : (T)0;
    /* box p's share of each corner: intersection (max of lower, min of upper),
     * enclosure (min of lower, max of upper); q gets the rest */
    const T sx1 = N_(share_max)(x1, X1), sy1 = N_(share_max)(y1, Y1);
    const T sx2 = N_(share_min)(x2, X2), sy2 = N_(share_min)(y2, Y2);
    const T ex1 = N_(share_min)(x1, X1), ey1 = N_(share_min)(y1, Y1);
    const T ex2 = N_(share_max)(x2, X2), ey2 = N_(share_max)(y2, Y2);
    gp[0] = -gw1 - giw * sx1 - gcw * ex1 + gdx;
    gp[1] = -gh1 - gih * sy1 - gch * ey1 + gdy;
    gp[2] = gw1 + giw * sx2 + gcw * ex2 + gdx;
    gp[3] = gh1 + gih * sy2 + gch * ey2 + gdy;
    gq[0] = -gw2 - giw * ((T)1 - sx1) - gcw * ((T)1 - ex1) - gdx;
    gq[1] = -gh2 - gih * ((T)1 - sy1) - gch * ((T)1 - ey1) - gdy;
    gq[2] = gw2 + giw * ((T)1 - sx2) + gcw * ((T)1 - ex2) - gdx;
    gq[3] = gh2 + gih * ((T)1 - sy2) + gch * ((T)1 - ey2) - gdy;
    return loss;
}

FL_INL double N_(box_impl)(const int kind, const int grad, const T *restrict b1,
                           const T *restrict b2, T *restrict lout, T *restrict g1,
                           T *restrict g2, int64_t n, T eps, T gs) {
    T buf[FL_BOX_SUM_BLOCK];
    double total = 0.0;
    for (int64_t b = 0; b < n; b += FL_BOX_SUM_BLOCK) {
        const int64_t m = n - b < FL_BOX_SUM_BLOCK ? n - b : FL_BOX_SUM_BLOCK;
        T *restrict ls = lout ? lout + b : buf;
        for (int64_t i = 0; i < m; i++) {
            const int64_t o = 4 * (b + i);
            ls[i] = N_(box_pair)(kind, grad, b1 + o, b2 + o, grad ? g1 + o : NULL,
                                 grad ? g2 + o : NULL, eps, gs);
        }
        V acc = N_(vset1)(0);
        int64_t i = 0;
        for (; i + W <= m; i += W) acc += N_(vload)(ls + i);
        if (i < m) acc += N_(vload_part)(ls + i, m - i, 0);
        total += N_(vhsum)(acc);
    }
    return total;
}

/* n box pairs: returns the sum of the losses; lout (per pair) and the gradients
 * g1, g2 (both or neither, times gs) are optional. */
static double N_(box_block)(int kind, const T *b1, const T *b2, T *lout, T *g1, T *g2,
                            int64_t n, T eps, T gs) {
    if (g1) {
        switch (kind) {
        case FL_BOX_GIOU: return N_(box_impl)(FL_BOX_GIOU, 1, b1, b2, lout, g1, g2, n, eps, gs);
        case FL_BOX_DIOU: return N_(box_impl)(FL_BOX_DIOU, 1, b1, b2, lout, g1, g2, n, eps, gs);
        default: return N_(box_impl)(FL_BOX_CIOU, 1, b1, b2, lout, g1, g2, n, eps, gs);
        }
    }
    switch (kind) {
    case FL_BOX_GIOU: return N_(box_impl)(FL_BOX_GIOU, 0, b1, b2, lout, NULL, NULL, n, eps, gs);
    case FL_BOX_DIOU: return N_(box_impl)(FL_BOX_DIOU, 0, b1, b2, lout, NULL, NULL, n, eps, gs);
    default: return N_(box_impl)(FL_BOX_CIOU, 0, b1, b2, lout, NULL, NULL, n, eps, gs);
    }
}

/* Index of the first of n boxes with x2 < x1 or y2 < y1, or -1. Checks pieces of
 * FL_BOX_SUM_BLOCK boxes with a branch-free (vectorisable) test first. NaN passes. */
static int64_t N_(box_first_bad)(const T *bx, int64_t n) {
    for (int64_t b = 0; b < n; b += FL_BOX_SUM_BLOCK) {
        const int64_t end = n - b < FL_BOX_SUM_BLOCK ? n : b + FL_BOX_SUM_BLOCK;
        int bad = 0;
        for (int64_t i = b; i < end; i++)
            bad |= (bx[4 * i + 2] < bx[4 * i]) | (bx[4 * i + 3] < bx[4 * i + 1]);
        if (bad)
            for (int64_t i = b; i < end; i++)
                if (bx[4 * i + 2] < bx[4 * i] || bx[4 * i + 3] < bx[4 * i + 1]) return i;
    }
    return -1;
}
