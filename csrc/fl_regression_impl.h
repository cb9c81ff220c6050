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

#include "fl_pointwise.h"

#ifndef FL_REG_KINDS
/* The elementwise losses: FL_REG_<KIND> (fl_reg_block's `kind`) and the name the
 * Python wrappers pass. A new loss adds its entry here and its case to reg_point. */
#define FL_REG_KINDS(X) \
    X(MSE, "mse") X(L1, "l1") X(SMOOTH_L1, "smooth_l1") X(HUBER, "huber") X(LOGCOSH, "log_cosh")
#define FL_REG_ENUM(kind, str) FL_REG_##kind,
enum { FL_REG_KINDS(FL_REG_ENUM) };
#undef FL_REG_ENUM
#endif

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
    *l = N_(vsel)(small, lc, (a - (T)FL_LN2) + lc);
    *d = N_(vxorsign)(th, r);
}
#undef FL_ATANH_TERMS

/* Loss l and derivative d = dl/dr of one vector of residuals; p is beta (smooth
 * L1) or delta (Huber). `kind` is a compile-time constant at every call, so the
 * switch folds away. */
FL_INL void N_(reg_point)(const int kind, V r, T p, V *l, V *d) {
    switch (kind) {
    case FL_REG_MSE:
        N_(sqerr_point)(r, l, d);
        break;
    case FL_REG_L1:
        *l = N_(vabs)(r);
        *d = N_(vsignmul)(r, N_(vset1)((T)1));
        break;
    case FL_REG_SMOOTH_L1: {
        V a = N_(vabs)(r);
        VI in = a < p;                         /* never true for beta = 0 or NaN */
        V q = r / p;                           /* not r * (1/beta): 1/beta overflows for a subnormal beta */
        *l = N_(vsel)(in, (T)0.5 * r * q, a - (T)0.5 * p);
        *d = N_(vsel)(in, q, N_(vsignmul)(r, N_(vset1)((T)1)));
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
    case FL_REG_LOGCOSH:
        N_(vlogcosh)(r, l, d);
        break;
    }
}

/* One vector of nk <= W elements at offset k: stores w * l (lout) and w * dl/dx * gscale
 * (g) where asked, returns w * l with the lanes past nk zeroed (padded lanes have
 * r = 0 and l = 0 already; the select also keeps a weight's padding from mattering).
 * m (or NULL): the where= mask, one byte per element: where it is 0, l and the gradient
 * are 0 (selected, so a NaN or inf there counts for nothing). */
FL_INL V N_(reg_step)(const int kind, const T *x, const T *t, const T *w, const uint8_t *m,
                      T *lout, T *g, int64_t k, int64_t nk, T p, T gscale, N_(swriter) *sw) {
    V r = N_(vload_n)(x + k, nk, 0) - N_(vload_n)(t + k, nk, 0);
    V l, d;
    N_(reg_point)(kind, r, p, &l, &d);
    if (w) {
        V wk = N_(vload_n)(w + k, nk, 0);
        l *= wk;
        d *= wk;
    }
    return N_(masked_store)(l, d * gscale, m, lout, g, k, nk, sw);
}

/* One block of n elements: returns sum(w * l) (float64 over FL_SUM_BLOCK
 * pieces); lout (w * l per element) and g (w * dl/dx * gscale) are optional,
 * w is NULL (all ones) or n weights aligned with x, m NULL or n mask bytes. The partial
 * vector is handled after the loop, so the loop's accumulator never lives across a call. */
FL_INL double N_(reg_impl)(const int kind, const T *x, const T *t, const T *w,
                           const uint8_t *m, T *lout, T *g, int64_t n, T p, T gscale,
                           N_(swriter) *sw) {
    double total = 0.0;
    for (int64_t b = 0; b < n; b += FL_SUM_BLOCK) {
        const int64_t end = b + FL_SUM_BLOCK < n ? b + FL_SUM_BLOCK : n;
        V acc = N_(vset1)(0);
        int64_t k = b;
        for (; k + W <= end; k += W)
            acc += N_(reg_step)(kind, x, t, w, m, lout, g, k, W, p, gscale, sw);
        if (k < end) acc += N_(reg_step)(kind, x, t, w, m, lout, g, k, end - k, p, gscale, sw);
        total += N_(vhsum)(acc);
    }
    N_(sw_finish)(sw, g, n);
    return total;
}

/* Each loss as a separate, fully specialised loop (kind is checked by the caller); the
 * masked loop apart, so that the unmasked one carries no mask test. */
static double N_(reg_block)(int kind, const T *x, const T *t, const T *w, const uint8_t *m,
                            T *lout, T *g, int64_t n, T p, T gscale, int stream) {
    double total = NAN;
    /* log-cosh is bound by its arithmetic, and measured slower streaming (as the sigmoid
     * losses, whose steps pass no writer) */
    N_(swriter) sw0, *sw = N_(sw_begin)(&sw0, stream && kind != FL_REG_LOGCOSH, g);
#define FL_REG_CASE(k, str) case FL_REG_##k: total = m \
    ? N_(reg_impl)(FL_REG_##k, x, t, w, m, lout, g, n, p, gscale, sw) \
    : N_(reg_impl)(FL_REG_##k, x, t, w, NULL, lout, g, n, p, gscale, sw); break;
    switch (kind) {
    FL_REG_KINDS(FL_REG_CASE)
    }
#undef FL_REG_CASE
    N_(vstream_fence)(sw != NULL);
    return total;
}

/* --- bounding boxes: (x1, y1, x2, y2) per box, 4 contiguous values ------------------
 * W box pairs at a time: the coordinates are transposed into one vector per
 * coordinate (and the gradients back), the math runs on whole vectors. */

FL_INL V N_(vmax2)(V a, V b) { return N_(vsel)(a > b, a, b); }
FL_INL V N_(vmin2)(V a, V b) { return N_(vsel)(a < b, a, b); }
/* Share of a in d max(a, b) (or d min(a, b) with `lt`): 1, 0 or, on a tie, 1/2
 * (PyTorch's maximum/minimum split the gradient evenly between equal arguments). */
FL_INL V N_(vshare)(VI win, V a, V b) {
    return N_(vsel)(win, N_(vset1)((T)1), N_(vsel)(a == b, N_(vset1)((T)0.5), N_(vset1)((T)0)));
}

/* Index lists for fl_vec.h's FL_SHUF (two-source lane shuffles), per vector width. */
#if W == 2
#define FL_EVEN 0, 2
#define FL_ODD 1, 3
#define FL_ZLO 0, 2
#define FL_ZHI 1, 3
#elif W == 4
#define FL_EVEN 0, 2, 4, 6
#define FL_ODD 1, 3, 5, 7
#define FL_ZLO 0, 4, 1, 5
#define FL_ZHI 2, 6, 3, 7
#elif W == 8
#define FL_EVEN 0, 2, 4, 6, 8, 10, 12, 14
#define FL_ODD 1, 3, 5, 7, 9, 11, 13, 15
#define FL_ZLO 0, 8, 1, 9, 2, 10, 3, 11
#define FL_ZHI 4, 12, 5, 13, 6, 14, 7, 15
#elif W == 16
#define FL_EVEN 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30
#define FL_ODD 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31
#define FL_ZLO 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23
#define FL_ZHI 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31
#endif

/* W boxes (4W contiguous values) from p into c[0..3], one vector per coordinate:
 * two rounds of even/odd splits. nb < W: the missing boxes read as (0, 0, 0, 0),
 * which give finite values that the caller drops. */
FL_INL void N_(box_load)(const T *p, int64_t nb, V *c) {
    V v0, v1, v2, v3;
    if (nb >= W) {
        v0 = N_(vload)(p); v1 = N_(vload)(p + W); v2 = N_(vload)(p + 2 * W); v3 = N_(vload)(p + 3 * W);
    } else {
        T buf[4 * W];
        memset(buf, 0, sizeof buf);
        memcpy(buf, p, (size_t)(4 * nb) * sizeof(T));
        v0 = N_(vload)(buf); v1 = N_(vload)(buf + W); v2 = N_(vload)(buf + 2 * W); v3 = N_(vload)(buf + 3 * W);
    }
    V a = FL_SHUF(v0, v1, FL_EVEN), b = FL_SHUF(v0, v1, FL_ODD);   /* x1 x2 ..., y1 y2 ... */
    V e = FL_SHUF(v2, v3, FL_EVEN), f = FL_SHUF(v2, v3, FL_ODD);
    c[0] = FL_SHUF(a, e, FL_EVEN);
    c[2] = FL_SHUF(a, e, FL_ODD);
    c[1] = FL_SHUF(b, f, FL_EVEN);
    c[3] = FL_SHUF(b, f, FL_ODD);
}
/* The inverse: c[0..3] back into nb <= W boxes at p, by two rounds of zips. */
FL_INL void N_(box_store)(T *p, int64_t nb, const V *c) {
    V a = FL_SHUF(c[0], c[2], FL_ZLO), e = FL_SHUF(c[0], c[2], FL_ZHI);
    V b = FL_SHUF(c[1], c[3], FL_ZLO), f = FL_SHUF(c[1], c[3], FL_ZHI);
    V v0 = FL_SHUF(a, b, FL_ZLO), v1 = FL_SHUF(a, b, FL_ZHI);
    V v2 = FL_SHUF(e, f, FL_ZLO), v3 = FL_SHUF(e, f, FL_ZHI);
    if (nb >= W) {
        N_(vstore)(p, v0); N_(vstore)(p + W, v1); N_(vstore)(p + 2 * W, v2); N_(vstore)(p + 3 * W, v3);
    } else {
        T buf[4 * W];
        N_(vstore)(buf, v0); N_(vstore)(buf + W, v1); N_(vstore)(buf + 2 * W, v2); N_(vstore)(buf + 3 * W, v3);
        memcpy(p, buf, (size_t)(4 * nb) * sizeof(T));
    }
}
#undef FL_EVEN
#undef FL_ODD
#undef FL_ZLO
#undef FL_ZHI

/* atan2(y, x) for x >= 0 (so the result is in [-pi/2, pi/2]); 0 when x = y = 0.
 * With a = |y|, lo = min(a, x), hi = max(a, x): atan(lo / hi) in [0, pi/4], reduced
 * to |z| <= tan(pi/8) by atan(u) = pi/4 + atan((u - 1) / (u + 1)) (one division for
 * either branch), then the odd Taylor series z - z^3/3 + ..., alternating, so the
 * error is below the first omitted term; pi/2 - that when a > x; y's sign. */
#if FL_DOUBLE
#define FL_ATAN_TERMS 20   /* first omitted term / z: tan(pi/8)^40 / 41 < 2^-56 */
#else
#define FL_ATAN_TERMS 9    /* tan(pi/8)^18 / 19 < 2^-27 */
#endif
FL_INL V N_(vatan2_xpos)(V y, V x) {
    const V a = N_(vabs)(y);
    const VI swap = a > x;
    const V lo = N_(vsel)(swap, x, a), hi = N_(vsel)(swap, a, x);
    const VI red = lo > (T)0.41421356237309504880 * hi;
    V z = N_(vsel)(red, lo - hi, lo) / N_(vsel)(red, lo + hi, hi);
    z = N_(vsel)(hi > (T)0, z, N_(vset1)((T)0));       /* 0 / 0 */
    const V z2 = z * z;
    V q = N_(vset1)((T)((FL_ATAN_TERMS % 2 ? 1.0 : -1.0) / (2 * FL_ATAN_TERMS - 1)));
    for (int k = FL_ATAN_TERMS - 2; k >= 1; k--) q = q * z2 + (T)((k % 2 ? -1.0 : 1.0) / (2 * k + 1));
    V r = z + z * z2 * q;
    r = N_(vsel)(red, r + (T)0.78539816339744830962, r);
    r = N_(vsel)(swap, (T)1.57079632679489661923 - r, r);
    return N_(vxorsign)(r, y);
}
#undef FL_ATAN_TERMS

/* torchvision's loss of W box pairs p, q and, with grad, its gradient times gs
 * into gp, gq:
 *   I = intersection area (0 unless the overlap has positive width and height),
 *   U = area(p) + area(q) - I, iou = I / (U + eps); enclosing box (cw, ch);
 *   GIoU: 1 - iou + (cw ch - U) / (cw ch + eps)
 *   DIoU: 1 - iou + |center(p) - center(q)|^2 / (cw^2 + ch^2 + eps)
 *   CIoU: DIoU + alpha v, v = 4/pi^2 (atan(wq/hq) - atan(wp/hp))^2,
 *         alpha = v / (1 - iou + v + eps) held constant in the gradient (torchvision
 *         computes it under no_grad).
 * The CIoU angle difference is one atan2(wq hp - wp hq, hp hq + wp wq): equal to the
 * difference of the two atans for positive heights (the second argument is >= 0), accurate
 * when the aspect ratios are close, and finite for zero-height boxes. Both arguments are 0
 * exactly when one box is a point, which has no aspect ratio: v = 0 there, with no
 * gradient through v. */
FL_INL V N_(box_vec)(const int kind, const int grad, const V *p, const V *q, V *gp, V *gq,
                     T eps, T gs) {
    const V x1 = p[0], y1 = p[1], x2 = p[2], y2 = p[3];
    const V X1 = q[0], Y1 = q[1], X2 = q[2], Y2 = q[3];
    const V zero = N_(vset1)((T)0);
    const V w1 = x2 - x1, h1 = y2 - y1, w2 = X2 - X1, h2 = Y2 - Y1;
    const VI sx1 = x1 > X1, sy1 = y1 > Y1, sx2 = x2 < X2, sy2 = y2 < Y2;  /* p wins */
    const V iw = N_(vsel)(sx2, x2, X2) - N_(vsel)(sx1, x1, X1);
    const V ih = N_(vsel)(sy2, y2, Y2) - N_(vsel)(sy1, y1, Y1);
    const VI ov = (iw > (T)0) & (ih > (T)0);
    const V I = N_(vsel)(ov, iw * ih, zero);
    const V U = w1 * h1 + w2 * h2 - I;
    const V Ue = U + eps, iou = I / Ue;
    const VI ex1 = x1 < X1, ey1 = y1 < Y1, ex2 = x2 > X2, ey2 = y2 > Y2;
    const V cw = N_(vsel)(ex2, x2, X2) - N_(vsel)(ex1, x1, X1);
    const V ch = N_(vsel)(ey2, y2, Y2) - N_(vsel)(ey1, y1, Y1);
    V loss, gU = zero, gcw = zero, gch = zero, gdx = zero, gdy = zero;
    V gw1 = zero, gh1 = zero, gw2 = zero, gh2 = zero;
    if (kind == FL_BOX_GIOU) {
        const V C = cw * ch, Ce = C + eps;
        loss = (T)1 - iou + (C - U) / Ce;
        if (grad) {
            const V rCe = (T)1 / Ce;
            gU = gs * (iou / Ue - rCe);              /* d/dU of -I/(U+eps) - U/(C+eps) */
            const V gC = (gs * rCe) * (Ue * rCe);    /* d/dC of (C - U)/(C + eps) */
            gcw = gC * ch;
            gch = gC * cw;
        }
    } else {
        const V dx = (x2 + x1) / (T)2 - (X1 + X2) / (T)2, dy = (y2 + y1) / (T)2 - (Y1 + Y2) / (T)2;
        const V c2 = dx * dx + dy * dy, d2 = cw * cw + ch * ch + eps;
        loss = (T)1 - iou + c2 / d2;
        if (grad) {
            const V rd2 = (T)1 / d2;
            gU = gs * iou / Ue;
            const V gd2 = -gs * (c2 * rd2) * rd2;
            gcw = gd2 * (T)2 * cw;
            gch = gd2 * (T)2 * ch;
            gdx = gs * dx * rd2;                     /* d/dx1 of c2/d2 (dx/dx1 = 1/2) */
            gdy = gs * dy * rd2;
        }
        if (kind == FL_BOX_CIOU) {
            const V ay = w2 * h1 - w1 * h2, ax = h1 * h2 + w1 * w2;
            const V da = N_(vatan2_xpos)(ay, ax);
            const V v = (T)0.40528473456935108578 * da * da;   /* 4 / pi^2 */
            const V alpha = v / ((T)1 - iou + v + eps);
            loss += alpha * v;
            if (grad) {
                /* d(alpha v)/d(da) times d(da) = (ax d(ay) - ay d(ax)) / (ax^2 + ay^2),
                 * with ax^2 + ay^2 = (w1^2 + h1^2)(w2^2 + h2^2) */
                const V r = ax * ax + ay * ay;
                const V gda = N_(vsel)(r > (T)0, (T)(2 * 0.40528473456935108578) * da * alpha * gs / r,
                                       zero);
                const V gay = gda * ax, gax = -gda * ay;
                gw1 = -gay * h2 + gax * w2;
                gh1 = gay * w2 + gax * h2;
                gw2 = gay * h1 + gax * w1;
                gh2 = -gay * w1 + gax * h1;
            }
        }
    }
    if (!grad) return loss;
    const V gI = -gs / Ue - gU;                      /* iou's own term, and U = ... - I */
    gw1 += gU * h1;
    gh1 += gU * w1;
    gw2 += gU * h2;
    gh2 += gU * w2;
    const V giw = N_(vsel)(ov, gI * ih, zero), gih = N_(vsel)(ov, gI * iw, zero);
    /* box p's share of each corner: intersection (max of lower, min of upper),
     * enclosure (min of lower, max of upper); q gets the rest */
    const V px1 = N_(vshare)(sx1, x1, X1), py1 = N_(vshare)(sy1, y1, Y1);
    const V px2 = N_(vshare)(sx2, x2, X2), py2 = N_(vshare)(sy2, y2, Y2);
    const V qx1 = N_(vshare)(ex1, x1, X1), qy1 = N_(vshare)(ey1, y1, Y1);
    const V qx2 = N_(vshare)(ex2, x2, X2), qy2 = N_(vshare)(ey2, y2, Y2);
    gp[0] = -gw1 - giw * px1 - gcw * qx1 + gdx;
    gp[1] = -gh1 - gih * py1 - gch * qy1 + gdy;
    gp[2] = gw1 + giw * px2 + gcw * qx2 + gdx;
    gp[3] = gh1 + gih * py2 + gch * qy2 + gdy;
    gq[0] = -gw2 - giw * ((T)1 - px1) - gcw * ((T)1 - qx1) - gdx;
    gq[1] = -gh2 - gih * ((T)1 - py1) - gch * ((T)1 - qy1) - gdy;
    gq[2] = gw2 + giw * ((T)1 - px2) + gcw * ((T)1 - qx2) - gdx;
    gq[3] = gh2 + gih * ((T)1 - py2) + gch * ((T)1 - qy2) - gdy;
    return loss;
}

/* nb <= W box pairs at pair offset i: stores the losses (lout) and gradients where
 * asked, returns the losses with the lanes past nb zeroed. */
FL_INL V N_(box_step)(const int kind, const int grad, const T *b1, const T *b2, T *lout, T *g1,
                      T *g2, int64_t i, int64_t nb, T eps, T gs) {
    V p[4], q[4], gp[4], gq[4];
    N_(box_load)(b1 + 4 * i, nb, p);
    N_(box_load)(b2 + 4 * i, nb, q);
    V l = N_(box_vec)(kind, grad, p, q, gp, gq, eps, gs);
    if (lout) N_(vstore_n)(lout + i, l, nb);
    if (grad) {
        N_(box_store)(g1 + 4 * i, nb, gp);
        N_(box_store)(g2 + 4 * i, nb, gq);
    }
    return N_(vkeep_first)(l, nb);
}

FL_INL double N_(box_impl)(const int kind, const int grad, const T *b1, const T *b2, T *lout,
                           T *g1, T *g2, int64_t n, T eps, T gs) {
    double total = 0.0;
    for (int64_t b = 0; b < n; b += FL_BOX_SUM_BLOCK) {
        const int64_t end = n - b < FL_BOX_SUM_BLOCK ? n : b + FL_BOX_SUM_BLOCK;
        V acc = N_(vset1)(0);
        int64_t i = b;
        for (; i + W <= end; i += W)
            acc += N_(box_step)(kind, grad, b1, b2, lout, g1, g2, i, W, eps, gs);
        if (i < end) acc += N_(box_step)(kind, grad, b1, b2, lout, g1, g2, i, end - i, eps, gs);
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
